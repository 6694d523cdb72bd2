"""Closed-set seen quality of the runs of `benchmarks.world_splits`: how well each arm learnt the seen classes.

    python -m benchmarks.closed_set --seeds 0 1 2 --arms seen-only c2s

Only the seen-labelled val pixels count (unseen ones are ignored) and the argmax runs over the seen classes
only, so the calibration (`eval.seen_bias`) and the unseen classes play no part: the protocol's sIoU mixes
this with how many seen pixels an arm gives to unseen classes. Same `segment` and `ConfusionMatrix` as
`c2s evaluate`; prints seen mIoU and pixel accuracy per (seed, split, arm).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.world_splits import SPLITS
from c2s_pipeline.config import load_params, override
from c2s_pipeline.data.base import IGNORE_INDEX
from c2s_pipeline.eval.inference import segment
from c2s_pipeline.eval.metrics import ConfusionMatrix
from c2s_pipeline.student.checkpoint import load_student
from c2s_pipeline.student.data import image_to_tensor
from stages.evaluate import _val_dataset


def closed_set(params, run_dir: Path) -> tuple[float, float]:
    """(seen mIoU, pixel accuracy) in %, over seen-labelled pixels, predicting seen classes only."""
    dataset = _val_dataset(params, None)
    seen = torch.from_numpy(dataset.spec.seen_mask())
    student, text, run = load_student(run_dir)
    size, scale = run.params.data.image_size, run.params.student.logit_scale
    cm = ConfusionMatrix(dataset.spec.num_classes)
    with torch.inference_mode():
        for i in range(len(dataset)):
            sample = dataset[i]
            pred = segment(lambda x: student.predict_logits(x, text, scale), image_to_tensor(sample.image)[None],
                           seen, -1.0, params.eval.calibration, mode="whole", crop=size, stride=size, flip=False)
            label = torch.from_numpy(sample.label).long()
            labelled = label != IGNORE_INDEX
            label[labelled & ~seen[label.clamp(max=len(seen) - 1)]] = IGNORE_INDEX   # unseen pixels: ignored
            cm.update(pred, label)
    iou = cm.iou().cpu().numpy()
    return 100 * float(np.nanmean(iou[seen.numpy()])), 100 * cm.pixel_accuracy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default="benchmarks/_world_splits", help="the --work of benchmarks.world_splits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    ap.add_argument("--arms", nargs="+", default=["seen-only", "c2s"], help="run folder names under runs/")
    args = ap.parse_args()
    for seed in args.seeds:
        seed_dir = Path(args.work) / f"seed{seed}"
        params = override(load_params(args.params), world={"seed": seed}, data={"root": str(seed_dir / "world")})
        for split in args.splits:
            p = params if SPLITS[split] is None else override(params, world={"unseen": list(SPLITS[split])})
            for arm in args.arms:
                miou, acc = closed_set(p, seed_dir / split / "runs" / arm)
                print(f"seed {seed} split {split} {arm}: closed-set seen mIoU {miou:.2f}, pixel accuracy {acc:.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
