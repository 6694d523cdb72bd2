"""What MMSeg's photometric distortion does to the teacher's global CLS, on the world's teacher.

    python -m benchmarks.photometric_cls --work data/benchmarks/world_splits --seed 0     # ~1 min on 2 cores

The student is shown a distorted view while it is taught the CLS of the plain view (precompute runs once, so the
distortion cannot reach the teacher). This measures how far apart the two CLS are: the cosine between CLIP's CLS
of a view and of the same view distorted (4 draws per image), beside two references: the cosine between the
whole image and one of its corner views (the corners store already teaches that gap), and between two different
images (what a wrong target looks like).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks import WORK
from c2s_pipeline.config import load_params, override
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.data.transforms import photometric_distortion, resize_pair, view_windows
from c2s_pipeline.teacher.clip import load_clip


def summary(values: list[float]) -> str:
    q = np.quantile(values, [0.05, 0.5])
    return f"{statistics.mean(values):.3f} | {q[1]:.3f} | {q[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default=f"{WORK}/world_splits", help="where world_splits keeps the seeds' worlds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--out", default="metrics/photometric_cls.md")
    args = ap.parse_args()
    seed_dir = Path(args.work) / f"seed{args.seed}"
    p = override(
        load_params(args.params),
        data={"root": str(seed_dir / "world")},
        teacher={"pretrained": str(seed_dir / "teacher" / "clip.pt")},
    )
    size, t = p.data.image_size, p.teacher
    clip = load_clip(t.clip_model, t.pretrained, image_size=size, device="cpu", dense_mode=t.dense_mode)
    dataset = dataset_from_params(p, p.data.train_split, seen_only=True)
    rng = np.random.default_rng(0)
    corner = view_windows(size, t.view_crops)[1]
    plain, distorted, corners = [], [], []
    for i in range(min(args.images, len(dataset))):
        image = resize_pair(dataset[i].image, dataset[i].label, size)[0]
        batch = np.stack([image] + [photometric_distortion(image, rng) for _ in range(4)])
        with torch.no_grad():
            x = clip.preprocess(batch, size)
            cls = clip.encode_crops(x)  # (5, D), unit
            y, x0, s = corner
            corner_cls = clip.encode_crops(x[:1, :, y : y + s, x0 : x0 + s])[0]
        plain.append(cls[0])
        distorted += (cls[1:] @ cls[0]).tolist()
        corners.append(float(corner_cls @ cls[0]))
    stack = torch.stack(plain)
    cross = (stack @ stack.T)[~torch.eye(len(stack), dtype=torch.bool)].tolist()
    text = (
        f"World seed {args.seed}, {len(plain)} train images at {size} px, the teacher `{t.pretrained}`.\n\n"
        "| cosine of the CLS of | mean | median | 5th percentile |\n|---|---:|---:|---:|\n"
        f"| a view and the same view distorted (4 draws each) | {summary(distorted)} |\n"
        f"| the whole image and its top-left {t.view_crops[0]} corner | {summary(corners)} |\n"
        f"| two different images | {summary(cross)} |\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
