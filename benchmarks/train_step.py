"""Time per training step: (a) plain supervised student, (b) C2S from the cache, (c) C2S with CLIP online.

    python -m benchmarks.train_step                      # ViT-B/16 + Segformer-B0 at 512, batch 2
    python -m benchmarks.train_step --clip c2s-tiny-vit --size 128 --batch 8

A fresh world of --images pictures drawn at --size is precomputed into a temporary store (the teacher has
random weights unless --pretrained names some: speed does not depend on them). (a) and (b) take the same
batches, read from that store through the trainer's own DataLoader (`make_loader`) before the timing;
(c) computes the teacher fields in the step (global + dense forward, mining, local crops through CLIP),
which is what the two-phase design avoids. The three alternate call by call. Then:

- data wait: (b) alone for --wait-steps steps as the trainer runs them, the DataLoader's train.num_workers
  workers decoding beside the step, and the share of the time spent in `next(batches)`;
- profile: one step of (a) and of (b) by component (the `c2s.*` regions of `C2STask.forward`, backward,
  optimizer), CPU time under torch.profiler, which adds its own overhead: compare rows, not totals.

Targets on CPU at 512: b/a <= 1.15, c/b >= 3, data wait <= 10 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.config import Params, load_params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.data.transforms import resize_pair
from c2s_pipeline.engines.precompute import build_store
from c2s_pipeline.engines.train import baseline_params
from c2s_pipeline.runtime import keep_large_blocks_in_process
from c2s_pipeline.student.data import DistillDataset, make_loader
from c2s_pipeline.student.model import Student
from c2s_pipeline.student.task import C2STask
from c2s_pipeline.teacher.batch import teach_batch
from c2s_pipeline.teacher.clip import load_clip
from c2s_pipeline.teacher.identity import open_store
from c2s_pipeline.world.generator import generate_world


def bench_params(args, world: Path) -> Params:
    p = load_params(args.params)
    r = dataclasses.replace
    return r(
        p,
        data=r(p.data, dataset="world", root=str(world), image_size=args.size),
        world=r(p.world, n_train=args.images, n_val=1, n_caption=1, image_size=args.size),
        teacher=r(p.teacher, clip_model=args.clip, pretrained=args.pretrained, device=args.device, batch_size=4),
        student=r(p.student, arch=args.arch, encoder=args.encoder, encoder_weights=None),
        train=r(p.train, batch_size=args.batch, device=args.device),
    )


def make_task(params: Params, seen_text: torch.Tensor, device: str):
    torch.manual_seed(0)
    s = params.student
    task = C2STask(Student(s.arch, s.encoder, None, seen_text.shape[1]), seen_text, params.loss, s.logit_scale).to(
        device
    )
    return task, torch.optim.AdamW(task.parameters(), 1e-4, fused=True)  # as student.loop.build_optimizer


def train_step(task, opt, batch) -> None:
    loss = task(batch)["loss"]
    opt.zero_grad()
    with record_function("c2s.backward"):
        loss.backward()
    with record_function("c2s.optimizer"):
        opt.step()


def online_batch(clip, images, labels, params, distill: DistillDataset, size: int) -> dict:
    """The batch fields precompute would have stored, computed now with CLIP (whole-image view)."""
    records = teach_batch(clip, images, labels, params, clip.native_size)
    stack = lambda name: torch.from_numpy(np.stack([getattr(r, name) for r in records]))  # noqa: E731
    region_class = stack("region_class").long()
    seen = region_class >= 0
    region_class[seen] = torch.from_numpy(distill.seen_index)[region_class[seen]]  # into seen-index space
    return {
        "image": clip.preprocess(images, size),
        "pseudo_mask": stack("pseudo_mask").long(),
        "region_class": region_class,
        "local_cls": stack("local_cls").float(),
        "global_cls": stack("global_cls")[:, 0].float(),
        "label": torch.from_numpy(distill.seen_index[labels.numpy()]),
    }


def component_ms(task, opt, batch) -> dict[str, float]:
    """CPU ms per `c2s.*` region of one profiled step (after one unprofiled step)."""
    train_step(task, opt, batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(task, opt, batch)
    return {e.key[4:]: e.cpu_time_total / 1e3 for e in prof.key_averages() if e.key.startswith("c2s.")}


def data_wait_share(task, opt, loader, device: str, steps: int) -> tuple[float, float]:
    """(share of step time in next(batches), seconds per step) over `steps` consecutive steps."""
    batches = iter(loader)
    train_step(task, opt, {k: v.to(device) for k, v in next(batches).items()})  # workers up, warm
    waited, start = 0.0, time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in next(batches).items()}
        waited += time.perf_counter() - t0
        train_step(task, opt, batch)
    total = time.perf_counter() - start
    return waited / total, total / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="loss, mining and train settings come from here")
    ap.add_argument("--clip", default="ViT-B-16")
    ap.add_argument("--pretrained", default="", help="open_clip tag or checkpoint; empty = random weights")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--images", type=int, default=8, help="world images in the temporary store")
    ap.add_argument("--arch", default="segformer")
    ap.add_argument("--encoder", default="mit_b0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wait-steps", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    keep_large_blocks_in_process()  # as `c2s train` does
    dev = args.device
    with tempfile.TemporaryDirectory() as tmp:
        world, cache = Path(tmp) / "world", Path(tmp) / "cache"
        params = bench_params(args, world)
        generate_world(world, params.world)
        build_store(params, split=params.data.train_split, cache_dir=cache)
        reader = open_store(params, params.data.train_split, cache_dir=cache, seen_only=True)
        dataset = dataset_from_params(params, params.data.train_split, seen_only=True)
        distill = DistillDataset(reader, dataset, args.size, params.train)
        seen_text = torch.from_numpy(reader.text_embeddings())
        clip = load_clip(
            args.clip, args.pretrained, image_size=args.size, device=dev, dense_mode=params.teacher.dense_mode
        )
        pairs = [resize_pair(dataset[i].image, dataset[i].label, args.size) for i in range(args.batch)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        labels = torch.from_numpy(np.stack([p[1] for p in pairs]))

        plain, plain_opt = make_task(baseline_params(params), seen_text, dev)
        c2s, c2s_opt = make_task(params, seen_text, dev)
        # The batches of the timed steps, drawn beforehand through the trainer's DataLoader: loader workers
        # running beside the interleaved steps would slow whichever arm happens to be running.
        loader = iter(make_loader(distill, params.train))
        batches = [{k: v.to(dev) for k, v in next(loader).items()} for _ in range(args.repeats + 1)]
        del loader
        turn = {"a": 0, "b": 0}

        def next_batch(arm: str) -> dict:
            turn[arm] += 1
            return batches[(turn[arm] - 1) % len(batches)]

        times = interleaved_median_seconds(
            {
                "a_plain": lambda: train_step(plain, plain_opt, next_batch("a")),
                "b_c2s_cached": lambda: train_step(c2s, c2s_opt, next_batch("b")),
                "c_c2s_online": lambda: train_step(
                    c2s,
                    c2s_opt,
                    {k: v.to(dev) for k, v in online_batch(clip, images, labels, params, distill, args.size).items()},
                ),
            },
            args.repeats,
            device=dev,
        )
        wait, step_s = data_wait_share(c2s, c2s_opt, make_loader(distill, params.train), dev, args.wait_steps)
        profiles = {
            "a_plain": component_ms(plain, plain_opt, batches[0]),
            "b_c2s_cached": component_ms(c2s, c2s_opt, batches[0]),
        }

    print(
        f"{args.arch}/{args.encoder} student, {args.clip} teacher, {args.size}px, batch {args.batch}, {dev}, "
        f"{params.train.num_workers} loader workers, {torch.get_num_threads()} threads"
    )
    for name, seconds in times.items():
        print(f"  {name:14s} {seconds * 1000:9.1f} ms/step")
    print(f"  b/a = {times['b_c2s_cached'] / times['a_plain']:.3f}  (target <= 1.15)")
    print(f"  c/b = {times['c_c2s_online'] / times['b_c2s_cached']:.2f}  (target >= 3)")
    print(
        f"  data wait = {100 * wait:.1f} % of a C2S step ({args.wait_steps} steps alone, "
        f"{step_s * 1000:.0f} ms/step)  (target <= 10 %)"
    )
    print("  profile, CPU ms of one step (profiler overhead included):")
    names = sorted(set().union(*profiles.values()), key=lambda k: -profiles["b_c2s_cached"].get(k, 0))
    print(f"    {'component':16s} {'a_plain':>9s} {'b_c2s':>9s}")
    for name in names:
        print(f"    {name:16s} " + " ".join(f"{profiles[arm].get(name, 0.0):9.1f}" for arm in profiles))


if __name__ == "__main__":
    main()
