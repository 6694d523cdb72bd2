"""Dense prediction of a student: whole-image or sliding-window logits, flip, seen-bias calibration."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from c2s_pipeline.data.transforms import keep_ratio_size
from c2s_pipeline.student.model import class_logits

LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, h, w) -> (B, C, h, w)


def slide_stride(stride: int, crop: int) -> int:
    """eval.stride, or its default 0: 5/6 of the window (mmseg's 426 for 512-px windows)."""
    return stride or crop * 5 // 6


def slide_size(height: int, width: int, crop: int) -> tuple[int, int]:
    """The size slide inference rescales an image to: ratio kept within (4 crop, crop), MMSeg's (2048, 512) at
    512 px and the view bank's size at ratio 1 (teacher.view_scale); each side at least `crop`."""
    h, w = keep_ratio_size(height, width, 4 * crop, crop)
    return max(crop, h), max(crop, w)


def slide_corners(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of mmseg's sliding windows over an image of at least crop x crop: every stride, and
    the last window against the bottom and right edges."""
    ys = list(range(0, max(height - crop, 0) + 1, stride))
    xs = list(range(0, max(width - crop, 0) + 1, stride))
    ys += [height - crop] if ys[-1] + crop < height else []
    xs += [width - crop] if xs[-1] + crop < width else []
    return [(y, x0) for y in ys for x0 in xs]


def _slide(logits_fn: LogitsFn, x: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """mmseg-style sliding window over x (1, 3, H, W) (H, W >= crop), overlaps averaged."""
    _, _, h, w = x.shape
    total: torch.Tensor | None = None
    count = x.new_zeros(1, 1, h, w)
    for y, x0 in slide_corners(h, w, crop, stride):
        out = logits_fn(x[..., y : y + crop, x0 : x0 + crop])
        total = x.new_zeros(1, out.shape[1], h, w) if total is None else total
        total[..., y : y + crop, x0 : x0 + crop] += out
        count[..., y : y + crop, x0 : x0 + crop] += 1
    assert total is not None  # at least one window: H, W >= crop
    return total / count


def predict_logits(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    *,
    mode: str = "whole",
    crop: int = 512,
    stride: int = 426,
    flip: bool = False,
    out_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """(1, 3, H, W) -> (1, C, H, W) logits at the image's own resolution (or at out_size).

    whole: the image resized to crop x crop (the training view). slide: the image rescaled keeping its ratio
    (`slide_size`: short side `crop`), windows of crop with `stride`, logits averaged.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"unknown eval mode '{mode}'; choose whole or slide")
    h, w = image.shape[-2:]
    size = (crop, crop) if mode == "whole" else slide_size(h, w, crop)
    x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    run = (lambda t: logits_fn(t)) if mode == "whole" else (lambda t: _slide(logits_fn, t, crop, stride))
    logits = run(x)
    if flip:
        logits = (logits + run(x.flip(-1)).flip(-1)) / 2
    return F.interpolate(logits, size=out_size or (h, w), mode="bilinear", align_corners=False)


CLIP_LOGIT_SCALE = 100.0  # CLIP's own temperature, so calibration acts on real class probabilities


def dense_text_logits(
    tokens: torch.Tensor, text: torch.Tensor, size: tuple[int, int], scale: float = CLIP_LOGIT_SCALE
) -> torch.Tensor:
    """CLIP's dense zero-shot map: tokens (h, w, D) vs text (C, D) -> (1, C, H, W) scaled cosine, upsampled."""
    logits = class_logits(tokens.float().permute(2, 0, 1)[None], text.float(), scale)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


CALIBRATIONS = ("softmax", "sigmoid")


def apply_seen_bias(
    logits: torch.Tensor, seen_mask: torch.Tensor, bias: float, dim: int = 1, calibration: str = "softmax"
) -> torch.Tensor:
    """Class scores with `bias` subtracted from seen classes (ZegCLIP): softmax over `dim`, or each class's
    sigmoid (ZegCLIP's own)."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration '{calibration}'; choose {' or '.join(CALIBRATIONS)}")
    probs = logits.softmax(dim) if calibration == "softmax" else logits.sigmoid()
    if bias == 0:
        return probs
    shape = [1] * probs.dim()
    shape[dim] = -1
    return probs - bias * seen_mask.to(probs.device, probs.dtype).view(shape)


def segment(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    seen_mask: torch.Tensor,
    bias: float,
    calibration: str = "softmax",
    **kwargs,
) -> torch.Tensor:
    """(1, 3, H, W) -> (H, W) class ids. Each window's logits are calibrated before windows (and flips)
    are merged, as ZegCLIP's slide inference does."""
    calibrated = lambda t: apply_seen_bias(logits_fn(t), seen_mask, bias, calibration=calibration)  # noqa: E731
    return predict_logits(calibrated, image, **kwargs)[0].argmax(0)
