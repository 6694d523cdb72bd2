"""Time per training step: (a) plain supervised student, (b) C2S from the cache, (c) C2S with CLIP online.

    python -m benchmarks.train_step                      # ViT-B/16 + Segformer-B0 at 512, batch 2
    python -m benchmarks.train_step --clip c2s-world-vit --size 128 --batch 8

Same student, batch and input size, one run. (b) gets its teacher tensors as the cache delivers them;
(c) computes them in the step (global + dense forward, mining, local crops through CLIP), which is
what the two-phase design avoids. Targets on CPU at 512: b/a <= 1.15, c/b >= 3.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.config import LossConfig, MiningConfig
from c2s_pipeline.student.model import Student
from c2s_pipeline.student.task import C2STask
from c2s_pipeline.teacher.clip import load_clip
from c2s_pipeline.teacher.batch import teach_batch


def teacher_batch(clip, images, labels, args, params):
    """The batch fields precompute would have stored, computed now with CLIP."""
    records = teach_batch(clip, images, labels, params, clip.native_size)
    stack = lambda name: torch.from_numpy(np.stack([getattr(r, name) for r in records]))  # noqa: E731
    region_class = stack("region_class").long()
    region_class[region_class >= 0] = region_class[region_class >= 0] % 15            # into seen-index space
    return {"image": clip.preprocess(images, args.size), "pseudo_mask": stack("pseudo_mask").long(),
            "region_class": region_class, "local_cls": stack("local_cls").float(),
            "global_cls": stack("global_cls")[:, 0].float(), "label": labels.long()}  # whole-image view


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--arch", default="segformer")
    ap.add_argument("--encoder", default="mit_b0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    from c2s_pipeline.config import Params

    params = dataclasses.replace(Params(), mining=MiningConfig(),
                                 data=dataclasses.replace(Params().data, image_size=args.size))
    clip = load_clip(args.clip, None, image_size=args.size, device=args.device)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (args.batch, args.size, args.size, 3), dtype=np.uint8))
    labels = torch.full((args.batch, args.size, args.size), 255, dtype=torch.uint8)
    labels[:, : args.size // 2, : args.size // 2] = 3                 # one seen object per image
    cached = {k: v.to(args.device) for k, v in teacher_batch(clip, images, labels, args, params).items()}
    seen_text = torch.randn(15, clip.embed_dim)
    baseline_cfg = dataclasses.replace(LossConfig(), use_global=False, use_local=False, use_latent=False)

    def make(cfg):
        torch.manual_seed(0)
        task = C2STask(Student(args.arch, args.encoder, None, clip.embed_dim), seen_text, cfg, 50.0).to(args.device)
        return task, torch.optim.AdamW(task.parameters(), 1e-4)

    def step(task, opt, batch):
        loss = task(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    plain, plain_opt = make(baseline_cfg)
    c2s, c2s_opt = make(LossConfig())
    times = interleaved_median_seconds({
        "a_plain": lambda: step(plain, plain_opt, cached),
        "b_c2s_cached": lambda: step(c2s, c2s_opt, cached),
        "c_c2s_online": lambda: step(c2s, c2s_opt, {k: v.to(args.device) for k, v in
                                                    teacher_batch(clip, images, labels, args, params).items()}),
    }, args.repeats, device=args.device)
    print(f"{args.arch}/{args.encoder} student, {args.clip} teacher, {args.size}px, batch {args.batch}, {args.device}")
    for name, seconds in times.items():
        print(f"  {name:14s} {seconds * 1000:9.1f} ms/step")
    print(f"  b/a = {times['b_c2s_cached'] / times['a_plain']:.3f}  (target <= 1.15)")
    print(f"  c/b = {times['c_c2s_online'] / times['b_c2s_cached']:.2f}  (target >= 3)")


if __name__ == "__main__":
    main()
