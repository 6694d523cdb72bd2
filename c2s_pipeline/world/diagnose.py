"""Diagnostics of the embedded default: is the world's teacher able to teach, and what did the students learn?

Reads unseen-class labels for measurement only (crop accuracy, mining precision); nothing here feeds
precompute or training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from c2s_pipeline.cache.schema import LATENT
from c2s_pipeline.data.base import IGNORE_INDEX
from c2s_pipeline.data.transforms import resize_pair
from c2s_pipeline.eval.loop import confusion_matrix, dense_map_predictor
from c2s_pipeline.eval.metrics import summarize
from c2s_pipeline.teacher.clip import DENSE_MODES, FrozenCLIP

log = logging.getLogger(__name__)

MIN_OBJECT_PIXELS = 30  # smaller (mostly occluded) objects are not scored as crops
# A crop is a single-object crop when other objects cover at most this share of it: with more, the crop
# shows two things and either name is a fair answer.
SINGLE_OBJECT_MAX_OTHER = 0.05


def text_similarity(text: torch.Tensor, class_names: list[str]) -> dict:
    """Cosine matrix of the class prompts and its means over same-colour / same-shape pairs.

    The world's class names are "<colour> <shape>"; pairs are grouped by the first and last word.
    """
    cos = (text @ text.T).numpy()
    colour = [n.split()[0] for n in class_names]
    shape = [n.split()[-1] for n in class_names]
    pairs = [(i, j) for i in range(len(class_names)) for j in range(len(class_names)) if i != j]
    same_colour = [cos[i, j] for i, j in pairs if colour[i] == colour[j]]
    same_shape = [cos[i, j] for i, j in pairs if shape[i] == shape[j]]
    return {
        "matrix": cos.round(4).tolist(),
        "same_colour_mean": float(np.mean(same_colour)),
        "same_shape_mean": float(np.mean(same_shape)),
        "max_off_diagonal": float(max(cos[p] for p in pairs)),
    }


def object_crops(image: np.ndarray, label: np.ndarray) -> list[tuple[np.ndarray, int, float]]:
    """Square bounding-box crops (uint8 (s, s, 3)) of every labelled object, its class id and the share of
    the crop that other labelled objects cover."""
    out = []
    for c in np.unique(label[label != IGNORE_INDEX]):
        ys, xs = np.nonzero(label == c)
        if len(ys) < MIN_OBJECT_PIXELS:
            continue
        side = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
        top = int(np.clip((ys.min() + ys.max() + 1 - side) // 2, 0, label.shape[0] - side))
        left = int(np.clip((xs.min() + xs.max() + 1 - side) // 2, 0, label.shape[1] - side))
        window = label[top : top + side, left : left + side]
        other = float(((window != c) & (window != IGNORE_INDEX)).mean())
        out.append((image[top : top + side, left : left + side], int(c), other))
    return out


@torch.no_grad()
def crop_zero_shot(clip: FrozenCLIP, dataset, text: torch.Tensor) -> dict:
    """Top-1 of each object's bounding-box crop against all class prompts.

    Per class, seen and unseen over single-object crops (see SINGLE_OBJECT_MAX_OTHER); `all_crops` also
    counts crops that other objects overlap.
    """
    hits: dict[int, list[bool]] = {c: [] for c in range(dataset.spec.num_classes)}
    single: dict[int, list[bool]] = {c: [] for c in range(dataset.spec.num_classes)}
    for i in tqdm(range(len(dataset)), desc="diagnose crops", unit="img", leave=False):
        sample = dataset[i]
        for crop, c, other in object_crops(sample.image, sample.label):
            x = clip.preprocess(crop[None], clip.native_size)
            hit = int((clip.encode_crops(x).cpu() @ text.T).argmax()) == c
            hits[c].append(hit)
            if other <= SINGLE_OBJECT_MAX_OTHER:
                single[c].append(hit)
    per_class = {dataset.spec.class_names[c]: _percent(h) for c, h in single.items()}
    return {
        "per_class": per_class,
        **_split_means(single, dataset.spec.unseen),
        "all_crops": _split_means(hits, dataset.spec.unseen),
    }


@torch.no_grad()
def scene_zero_shot(clip: FrozenCLIP, dataset, text: torch.Tensor, image_size: int) -> dict:
    """Top-1 of each whole val image's CLS (the global distillation target, preprocessed as precompute's
    whole view) against all class prompts; scored by `scene_top1`."""
    predicted, labels = [], []
    for i in tqdm(range(len(dataset)), desc="diagnose scenes", unit="img", leave=False):
        sample = dataset[i]
        cls = clip.encode_crops(clip.preprocess(sample.image[None], image_size)).cpu()
        predicted.append(int((cls @ text.T).argmax()))
        labels.append(sample.label)
    return scene_top1(predicted, labels, dataset.spec.unseen)


def scene_top1(predicted: list[int], labels: list[np.ndarray], unseen) -> dict:
    """Scene-level zero-shot scores of per-image top-1 classes against the images' labels.

    `present`: share of images (with any labelled object) whose top-1 is one of their classes;
    `single_object` seen / unseen: images showing one class, top-1 equal to it; `by_objects`: `present`
    per number of classes in the image.
    """
    present_hits: dict[int, list[bool]] = {}
    single: dict[int, list[bool]] = {}
    for top, label in zip(predicted, labels):
        classes = set(np.unique(label[label != IGNORE_INDEX]).tolist())
        if not classes:
            continue
        present_hits.setdefault(len(classes), []).append(top in classes)
        if len(classes) == 1:
            (c,) = classes
            single.setdefault(c, []).append(top == c)
    return {
        "present": _percent([h for v in present_hits.values() for h in v]),
        "by_objects": {n: _percent(v) for n, v in sorted(present_hits.items())},
        "single_object": _split_means(single, unseen),
    }


def _percent(hits: list[bool]) -> float | None:
    return 100 * float(np.mean(hits)) if hits else None


def _split_means(hits: dict[int, list[bool]], unseen) -> dict:
    return {
        "seen_top1": _percent([h for c, v in hits.items() if c not in unseen for h in v]),
        "unseen_top1": _percent([h for c, v in hits.items() if c in unseen for h in v]),
        "crops": sum(len(v) for v in hits.values()),
    }


@torch.no_grad()
def dense_modes_miou(clip: FrozenCLIP, dataset, text: torch.Tensor, image_size: int, seen_bias: float) -> dict:
    """sIoU / uIoU / hIoU of the teacher's own dense zero-shot map, for every dense mode."""
    seen = torch.from_numpy(dataset.spec.seen_mask())
    original, results = clip.dense_mode, {}
    try:
        for mode in [m for m in DENSE_MODES if m != "standard"]:
            clip.dense_mode = mode

            def tokens(sample, _):
                return clip.encode_images(clip.preprocess(sample.image[None], image_size)).dense_tokens[0].cpu()

            cm = confusion_matrix(
                dataset,
                dense_map_predictor(tokens, text, dataset.spec.seen_mask(), seen_bias),
                desc=f"diagnose dense {mode}",
            )
            results[mode] = summarize(cm.iou(), seen, cm.pixel_accuracy())
    finally:
        clip.dense_mode = original
    return results


def mining_quality(reader, dataset, image_size: int) -> dict:
    """Pixel precision / recall of the mined latent regions against the true unseen objects (train split)."""
    unseen = np.asarray(dataset.spec.unseen)
    inter = latent_px = unseen_px = 0
    for i in tqdm(range(len(dataset)), desc="diagnose mining", unit="img", leave=False):
        sample = dataset[i]
        _, label = resize_pair(sample.image, sample.label, image_size)
        rec = reader.read(i)
        latent_slots = np.nonzero(rec.region_class == LATENT)[0]
        latent = np.isin(rec.pseudo_mask, latent_slots)
        truth = np.isin(label, unseen)
        inter += int((latent & truth).sum())
        latent_px += int(latent.sum())
        unseen_px += int(truth.sum())
    return {
        "precision": 100 * inter / max(latent_px, 1),
        "recall": 100 * inter / max(unseen_px, 1),
        "latent_pixel_share": 100 * latent_px / (len(dataset) * image_size**2),
    }


def student_summaries(run_dirs: dict[str, Path], metric_files: dict[str, Path]) -> dict:
    """Per arm: the loss curve (log.jsonl) and the per-class IoU (metrics CSV), where they exist."""
    out = {}
    for name, run_dir in run_dirs.items():
        log_file = Path(run_dir) / "log.jsonl"
        curve = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
        metrics = Path(metric_files[name])
        out[name] = {
            "loss_curve": [{"iter": r["iter"], "loss": r["loss"]} for r in curve],
            "metrics": json.loads(metrics.read_text()) if metrics.is_file() else None,
        }
    return out


def diagnostics_plot(report: dict, class_names: list[str], unseen: list[int], out_png: str | Path) -> Path:
    """Three panels: the prompt cosine matrix, crop top-1 per class, and the students' loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    im = axes[0].imshow(np.asarray(report["text"]["matrix"]), vmin=-1, vmax=1, cmap="coolwarm")
    labels = [n + (" *" if i in unseen else "") for i, n in enumerate(class_names)]
    axes[0].set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0].set_title("cosine of the class prompt embeddings")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    acc = [report["crops"]["per_class"][n] or 0.0 for n in class_names]
    axes[1].bar(range(len(labels)), acc, color=["tab:red" if i in unseen else "tab:blue" for i in range(len(acc))])
    axes[1].set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes[1].set_ylabel("top-1 (%)")
    axes[1].set_title("teacher zero-shot top-1 on single-object crops (red = unseen)")
    for name, arm in report.get("students", {}).items():
        curve = arm["loss_curve"]
        if curve:
            axes[2].plot([r["iter"] for r in curve], [r["loss"] for r in curve], label=name)
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("training loss")
    axes[2].set_title("student loss curves")
    if report.get("students"):
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)
