"""Pixels no typed name fits, on the world's val split: each `predict.unlabelled` option against none.

    python -m benchmarks.unlabelled --run models/c2s                # after make demo

Two vocabularies a user might type: `all` (the 20 class names) and `few` (8 names drawn per image, seeded by the
image, so objects of the other classes are unnamed as well as the background). Every option runs the product's
path (eval.open_vocab.class_scores then label_pixels). Columns, in %:
- background left: background pixels left unlabelled (the world labels its background; 100 is best);
- unnamed left: background and unnamed-class pixels left unlabelled (`few` only);
- named mIoU: IoU of each typed class against its pixels, mean over the classes present; a pixel of a typed
  class left unlabelled counts against it, a background pixel given its name too.
The benchmarks' protocol (evaluate) is untouched: it labels every pixel, as ZegCLIP does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from c2s_pipeline.config import override
from c2s_pipeline.data.reader import read_label
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.eval.open_vocab import UNLABELLED, class_scores, label_pixels, text_encoder
from c2s_pipeline.student.checkpoint import load_student

BACKGROUND_SETS = {"background": ("background",), "background set": ("background", "wall", "floor", "ground", "sky")}
THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
FEW = 8


def options() -> list[tuple[str, str | None, float]]:
    """(label, background set (None: the typed names alone), threshold) of every option measured."""
    return [
        ("none", None, 0.0),
        *[(f"threshold {t}", None, t) for t in THRESHOLDS],
        *[(f"background prompts: {k}", k, 0.0) for k in BACKGROUND_SETS],
    ]


class Tally:
    """Pixel counts of one option in one scenario."""

    def __init__(self, num_classes: int):
        self.cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)  # last row / column: unlabelled
        self.background = [0, 0]  # [left unlabelled, all]
        self.unnamed = [0, 0]

    def add(self, truth: np.ndarray, pred: np.ndarray, named: list[int], background: np.ndarray) -> None:
        """truth (H, W) class ids (-1 background, 255 ignore), pred (H, W) indices into `named` or UNLABELLED."""
        keep = truth != 255
        n = self.cm.shape[0] - 1
        names = np.asarray(named + [n])
        t = np.where(np.isin(truth, named), truth, n)[keep]  # a class not typed is unlabelled truth
        p = names[np.where(pred == UNLABELLED, len(named), pred)][keep]
        self.cm += np.bincount(t * (n + 1) + p, minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
        left = pred == UNLABELLED
        self.background[0] += int((left & background).sum())
        self.background[1] += int(background.sum())
        unnamed = keep & ~np.isin(truth, named)
        self.unnamed[0] += int((left & unnamed).sum())
        self.unnamed[1] += int(unnamed.sum())

    def row(self) -> dict:
        cm, n = self.cm, self.cm.shape[0] - 1
        tp, union = np.diag(cm)[:n], cm[:n].sum(1) + cm[:, :n].sum(0) - np.diag(cm)[:n]
        present = cm[:n].sum(1) > 0
        return {
            "background left": 100 * self.background[0] / max(self.background[1], 1),
            "unnamed left": 100 * self.unnamed[0] / max(self.unnamed[1], 1),
            "named mIoU": 100 * float((tp[present] / union[present]).mean()),
        }


def measure(run_dir: Path, cache_dir: Path, data_root: str | None) -> dict[str, dict[str, dict]]:
    """{scenario: {option: row}} over the val split of the run's world."""
    student, text, run = load_student(run_dir, cache_dir=cache_dir)
    p = run.params
    if data_root:
        p = override(p, data={"root": data_root})
    dataset = dataset_from_params(p, p.data.val_split)
    num = len(text)
    clip, templates = text_encoder(p)
    extra = {k: clip.encode_text(list(v), templates=templates).float() for k, v in BACKGROUND_SETS.items()}
    tallies = {s: {label: Tally(num) for label, _, _ in options()} for s in ("all", "few")}
    for i in range(len(dataset)):
        image = dataset.load_image(i)
        raw = read_label(dataset.label_path(i)).astype(np.int64)
        truth = np.where(raw == 0, -1, np.where(raw == 255, 255, raw - 1))  # VOC layout: class id + 1
        background = raw == 0
        rng = np.random.default_rng(i)
        for scenario, named in (("all", list(range(num))), ("few", sorted(rng.choice(num, FEW, replace=False)))):
            named = [int(c) for c in named]
            scores = {
                None: class_scores(student, text[named], run.params, run.params.eval, image),  # once a vocabulary
                **{
                    k: class_scores(student, torch.cat([text[named], e]), run.params, run.params.eval, image)
                    for k, e in extra.items()
                },
            }
            for label, bg, threshold in options():
                pred = label_pixels(scores[bg], len(named), threshold)
                tallies[scenario][label].add(truth, pred, named, background)
    return {s: {label: t.row() for label, t in by.items()} for s, by in tallies.items()}


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| option | all: background left | all: named mIoU | few: background left | few: unnamed left "
        "| few: named mIoU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in results["all"]:
        a, f = results["all"][label], results["few"][label]
        lines.append(
            f"| {label} | {a['background left']:.1f} | {a['named mIoU']:.1f} | {f['background left']:.1f} "
            f"| {f['unnamed left']:.1f} | {f['named mIoU']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="models/c2s")
    ap.add_argument("--cache-dir", default="data_cache", help="folder of teacher stores")
    ap.add_argument("--data-root", default=None, help="the world's folder, when not the run's data.root")
    args = ap.parse_args()
    print(table(measure(Path(args.run), Path(args.cache_dir), args.data_root)))


if __name__ == "__main__":
    main()
