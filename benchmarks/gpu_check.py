"""The paper path at its real shape on one CUDA GPU, in one command (`make gpu-check`), or tiny on the CPU.

    python -m benchmarks.gpu_check                         # CUDA: VOC layout at 512 px, ViT-B/16, ~5-8 min
    python -m benchmarks.gpu_check --data data/VOCdevkit/VOC2012 --pretrained openai   # real images / weights
    python -m benchmarks.gpu_check --tiny                  # what CI runs: the same steps at toy sizes, < 60 s

Steps, with params-voc.yaml's recipe: VOC-layout images (generated unless --data), precompute with the view bank
(ViT-B/16; random weights unless --pretrained names a tag or a file), 300 iterations of Segformer-B0 at batch 16
(autocast on CUDA), slide evaluation, ONNX export, and one 2-process torchrun training step when two GPUs are
present. Prints one line per step with what it measured (precompute images/s, training it/s, evaluation FPS,
peak GPU memory) and a last line PASSED or FAILED; exits 1 on any error, non-finite loss or metric, or a
student that is not on the device it should be.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from c2s_pipeline.config import load_params, override, to_dict
from c2s_pipeline.data.registry import dataset_from_params

REPO = Path(__file__).resolve().parents[1]


def make_voc_layout(root: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """VOCdevkit/VOC2012 with random VOC-sized images (333-500 px sides) of random class rectangles."""
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for split, n in (("train_aug", n_train), ("val", n_val)):
        ids = [f"{split}_{i:05d}" for i in range(n)]
        for id_ in ids:
            h, w = (int(v) for v in rng.integers(333, 501, size=2))
            label = np.zeros((h, w), np.uint8)
            for _ in range(4):
                y, x = rng.integers(0, h - 60), rng.integers(0, w - 60)
                label[y : y + rng.integers(40, h // 2), x : x + rng.integers(40, w // 2)] = rng.integers(1, 21)
            palette = rng.integers(0, 256, size=(256, 3)).astype(np.uint8)
            noise = rng.integers(0, 24, size=(h, w, 3))
            image = np.clip(palette[label] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(base / "JPEGImages" / f"{id_}.jpg", quality=90)
            Image.fromarray(label).save(base / "SegmentationClassAug" / f"{id_}.png")
        (base / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def check_params(args, root: Path, cuda: bool):
    """params-voc.yaml at the check's shape: the paper's sizes on CUDA, toy sizes with --tiny."""
    p = load_params(REPO / "params-voc.yaml")
    device = "cuda" if cuda else "cpu"
    if args.tiny:
        p = override(
            p,
            data={"image_size": 64},
            teacher={
                "clip_model": "c2s-tiny-vit",
                "view_count": 2,
                "view_scale": [256, 64],
                "batch_size": 4,
                "workers": 0,
                "max_regions": 8,
            },
            mining={"window_sizes": [2]},
            train={"iterations": 3, "batch_size": 2, "num_workers": 0, "warmup_iters": 1},
            eval={"stride": 0, "fps_iters": 2, "fps_warmup": 1},
        )
    else:
        p = override(
            p,
            train={"iterations": args.iterations, "num_workers": 4},
            teacher={"workers": 4},
            eval={"fps_iters": 50, "fps_warmup": 10},
        )
    p = override(
        p,
        data={"root": str(root)},
        teacher={"device": device},
        train={"device": device, "checkpoint_every": p.train.iterations, "log_every": 1},
        eval={"device": device},
    )
    weights = args.pretrained
    return dataclasses.replace(
        p,
        teacher=dataclasses.replace(p.teacher, pretrained=weights),
        student=dataclasses.replace(p.student, encoder_weights=args.encoder_weights),
    )


class Check:
    """Runs the steps in order, prints one line each, and remembers the first failure."""

    def __init__(self):
        self.failed: str | None = None

    def step(self, name: str, fn):
        if self.failed:
            print(f"SKIP {name}", flush=True)
            return None
        start = time.perf_counter()
        try:
            result, said = fn()
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the check exits 1
            traceback.print_exc()
            self.failed = f"{name}: {err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"FAIL {self.failed}", flush=True)
            return None
        print(f"PASS {name} ({time.perf_counter() - start:.1f} s): {said}", flush=True)
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes (the CPU variant; implied without CUDA)")
    ap.add_argument("--data", help="a VOC2012 folder (JPEGImages, SegmentationClassAug, ImageSets); default: made")
    ap.add_argument("--pretrained", default="", help="open_clip tag or checkpoint file; default: random weights")
    ap.add_argument("--encoder-weights", default=None, help="imagenet or a file; default: none (no download)")
    ap.add_argument("--images", type=int, default=128, help="generated train images (a quarter as many for val)")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--work", help="folder for data, store, run, ONNX; default: a temporary one")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    args.tiny = args.tiny or not cuda
    work = Path(args.work or tempfile.mkdtemp(prefix="c2s-gpu-check-"))
    n_train = 6 if args.tiny else args.images
    device = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: the tiny variant)"
    print(f"gpu-check on {device}, torch {torch.__version__}, work folder {work}", flush=True)
    from c2s_pipeline.engines.evaluate import evaluate_run
    from c2s_pipeline.engines.export import export_run
    from c2s_pipeline.engines.precompute import build_store
    from c2s_pipeline.engines.train import train_student

    check = Check()

    def data():
        root = Path(args.data) if args.data else make_voc_layout(work / "data", n_train, max(2, n_train // 4))
        return root, f"{'given' if args.data else 'generated'} VOC layout at {root}"

    root = check.step("data", data)
    params = check_params(args, root, cuda) if root else None
    cache, run_dir = work / "cache", work / "run"

    def do_precompute():
        rates = []
        for split, views in (
            (params.data.train_split, f"{params.teacher.view_count} bank views each"),
            (params.data.val_split, "dense tokens kept"),
        ):
            start = time.perf_counter()
            build_store(params, split=split, cache_dir=cache)
            n = len(dataset_from_params(params, split))
            rates.append(f"{split} {n} images at {n / (time.perf_counter() - start):.2f} images/s ({views})")
        return None, f"{params.teacher.clip_model} at {params.data.image_size} px: " + "; ".join(rates)

    def do_train():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        train_student(params, run_dir, cache_dir=cache, resume=False)
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        bad = [row["iter"] for row in log if not all(math.isfinite(row[k]) for k in row if k.endswith("loss"))]
        if bad:
            raise FloatingPointError(f"non-finite loss at iteration {bad[0]}")
        if cuda and torch.cuda.max_memory_allocated() == 0:
            raise RuntimeError("training allocated no GPU memory: it did not run on the GPU")
        # the loop's own clock (log rows' "time", from its first batch on): start-up and the first step excluded
        steady = (log[-1]["iter"] - log[0]["iter"]) / max(log[-1]["time"] - log[0]["time"], 1e-9)
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        amp = "autocast bf16/fp16" if cuda and params.train.amp else "fp32"
        return None, (
            f"{params.train.iterations} iterations of {params.student.arch}/{params.student.encoder} at "
            f"batch {params.train.batch_size} on {params.train.device} ({amp}), {steady:.2f} it/s, "
            f"last loss {log[-1]['loss']:.3f}{peak}"
        )

    def do_evaluate():
        out = json.loads(evaluate_run(params, run_dir, work / "metrics.json", cache_dir=cache).read_text())
        if not all(math.isfinite(out[k]) for k in ("sIoU", "uIoU", "hIoU", "fps")):
            raise FloatingPointError(f"non-finite metrics {out}")
        return None, (
            f"{params.eval.mode} evaluation, sIoU {out['sIoU']:.2f} uIoU {out['uIoU']:.2f} "
            f"hIoU {out['hIoU']:.2f}, {out['fps']:.1f} FPS"
        )

    def do_export():
        path = export_run(run_dir, work / "student.onnx", cache_dir=cache)
        return None, f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"

    def do_torchrun():
        spec = work / "params-ddp.yaml"
        p = override(params, train={"iterations": 1, "batch_size": 4})
        spec.write_text(yaml.safe_dump(to_dict(p)))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "c2s_pipeline.stages.cli",
            "train",
            "--distributed",
            "--params",
            str(spec),
            "--run",
            str(work / "run-ddp"),
            "--cache-dir",
            str(cache),
            "--no-resume",
        ]
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        row = json.loads((work / "run-ddp" / "log.jsonl").read_text().splitlines()[-1])
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"non-finite loss {row['loss']} under torchrun")
        return None, f"one DistributedDataParallel step on 2 GPUs, loss {row['loss']:.3f}"

    check.step("precompute", do_precompute)
    check.step("train", do_train)
    check.step("evaluate", do_evaluate)
    check.step("export", do_export)
    if cuda and torch.cuda.device_count() >= 2:
        check.step("torchrun", do_torchrun)
    else:
        print("SKIP torchrun: fewer than 2 GPUs", flush=True)
    print(f"gpu-check: {'FAILED (' + check.failed + ')' if check.failed else 'PASSED'} on {device}", flush=True)
    if not args.work and not check.failed:
        shutil.rmtree(work, ignore_errors=True)  # a failed check keeps its folder to look into
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
