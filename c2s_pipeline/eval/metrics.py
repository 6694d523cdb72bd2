"""Confusion matrix at label resolution, the zero-shot summaries sIoU / uIoU / hIoU, and the pixels that
cross the seen / unseen split."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from c2s_pipeline.data.base import IGNORE_INDEX


class ConfusionMatrix:
    """(C, C) int64 counts, rows = label, columns = prediction; ignore-index pixels are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device=None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        pred, label = pred.flatten().long().to(self.mat.device), label.flatten().long().to(self.mat.device)
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        if len(label) and int(label.max()) >= self.num_classes:
            raise ValueError(
                f"label value {int(label.max())} is outside 0..{self.num_classes - 1} "
                f"and not the ignore index {self.ignore_index}"
            )
        idx = label * self.num_classes + pred
        self.mat += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def all_reduce(self) -> None:
        """Sum the counts over a torch.distributed world (no-op without one)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def iou(self) -> torch.Tensor:
        """(C,) float64 IoU; NaN for classes absent from both labels and predictions."""
        m = self.mat.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

    def pixel_accuracy(self) -> float:
        total = int(self.mat.sum())
        return float(self.mat.diag().sum()) / total if total else float("nan")


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def harmonic(s: float, u: float) -> float:
    """hIoU = 2 s u / (s + u); 0 when either side is 0 (or missing)."""
    if math.isnan(s) or math.isnan(u) or s <= 0 or u <= 0:
        return 0.0
    return 2 * s * u / (s + u)


def summarize(iou: torch.Tensor, seen_mask, pixel_acc: float) -> dict:
    """mIoU, sIoU, uIoU, hIoU and pixel accuracy, in percent."""
    seen = torch.as_tensor(np.asarray(seen_mask), dtype=torch.bool)
    s, u = _nanmean(iou[seen]) * 100, _nanmean(iou[~seen]) * 100
    return {"mIoU": _nanmean(iou) * 100, "sIoU": s, "uIoU": u, "hIoU": harmonic(s, u), "pixel_acc": pixel_acc * 100}


def split_confusion(mat: torch.Tensor, seen_mask) -> dict:
    """Where pixels cross the split, from a (C, C) confusion matrix (rows = label), in percent: labelled
    seen-class pixels predicted as an unseen class (what costs sIoU when unseen classes pull seen pixels),
    and unseen-class pixels predicted as a seen class (the seen bias that calibration targets). NaN for a
    side with no labelled pixels."""
    seen = torch.as_tensor(np.asarray(seen_mask), dtype=torch.bool, device=mat.device)
    m = mat.double()

    def share(rows: torch.Tensor, cols: torch.Tensor) -> float:
        total = float(m[rows].sum())
        return float(m[rows][:, cols].sum()) / total * 100 if total else float("nan")

    return {"seen_as_unseen": share(seen, ~seen), "unseen_as_seen": share(~seen, seen)}


def per_class_rows(iou: torch.Tensor, class_names: list[str], seen_mask) -> list[dict]:
    seen = np.asarray(seen_mask, dtype=bool)
    return [
        {"class": name, "iou": None if math.isnan(v) else round(v * 100, 4), "seen": bool(seen[i])}
        for i, (name, v) in enumerate(zip(class_names, iou.tolist()))
    ]
