"""Closed-set seen quality of the runs of `benchmarks.world_splits`: how well each arm learnt the seen classes.

    python -m benchmarks.closed_set --work data/benchmarks/world_splits --arms seen-only c2s

Each run is read with its own saved params (world, split, image size, logit scale). Only the seen-labelled val
pixels count (the seen-only gate of training relabels the unseen ones to ignore) and the student scores the
seen classes' text rows alone, so neither the unseen classes nor the calibration (`eval.seen_bias`) play any
part. The protocol's sIoU mixes this with how many seen pixels an arm gives to unseen classes and how many
unseen pixels it gives to seen ones. Prints seen mIoU and pixel accuracy per run, in %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import WORK
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.eval.inference import predict_logits, slide_stride
from c2s_pipeline.eval.loop import confusion_matrix
from c2s_pipeline.eval.metrics import summarize
from c2s_pipeline.student.checkpoint import load_student
from c2s_pipeline.student.data import image_to_tensor


def closed_set(run_dir: Path, cache_dir: Path) -> tuple[float, float]:
    """(seen mIoU, pixel accuracy) in %, over seen-labelled val pixels, scoring the seen classes only."""
    student, text, run = load_student(run_dir, cache_dir=cache_dir)
    p = run.params
    dataset = dataset_from_params(p, p.data.val_split, seen_only=True)
    seen = torch.from_numpy(dataset.spec.seen_mask())
    seen_ids = seen.nonzero()[:, 0]  # seen-row index -> class id
    scale, size = p.student.logit_scale, p.data.image_size

    def predict(sample, _):
        logits = predict_logits(
            lambda x: student.predict_logits(x, text[seen], scale),
            image_to_tensor(sample.image, p.student.normalisation)[None],
            mode=p.eval.mode,
            crop=size,
            stride=slide_stride(p.eval.stride, size),
            flip=p.eval.flip,
        )
        return seen_ids[logits[0].argmax(0)]  # raw logits: no calibration, so no saturated ties

    cm = confusion_matrix(dataset, predict, desc=f"closed-set {run_dir.name}")
    scores = summarize(cm.iou().cpu(), seen.numpy(), cm.pixel_accuracy())
    return scores["sIoU"], scores["pixel_acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=f"{WORK}/world_splits", help="the --work of benchmarks.world_splits")
    ap.add_argument("--arms", nargs="+", default=["seen-only", "c2s"], help="run folder names under runs/")
    args = ap.parse_args()
    for split_dir in sorted(Path(args.work).glob("seed*/*/runs")):
        for arm in args.arms:
            if (split_dir / arm).is_dir():
                miou, acc = closed_set(split_dir / arm, split_dir.parent / "data_cache")
                print(
                    f"{split_dir.parent.parent.name} {split_dir.parent.name} {arm}: closed-set seen mIoU "
                    f"{miou:.2f}, pixel accuracy {acc:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
