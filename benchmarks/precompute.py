"""Whole precompute vs the bare CLIP forwards it needs: the cost of mining, IO and bookkeeping.

    python -m benchmarks.precompute                                  # the default world and teacher
    python -m benchmarks.precompute --params benchmarks/params-vitb16-world.yaml --images 32
    python -m benchmarks.precompute --params benchmarks/params-vitb16-world.yaml --images 8 --dense-tokens all

Runs `c2s_pipeline.engines.precompute.build_store` into a fresh cache, then, on the same images and with the
same number of region crops per image as were stored, only the CLIP forwards (global + dense pass, the corner views of
`teacher.view_crops`, one region-crop pass).
Target: overhead (precompute / forwards - 1) under 30%. Also prints the store's bytes per image on disk
(what `c2s cache ls` shows), with or without the dense tokens (--dense-tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch

from c2s_pipeline.cache.inspect import list_stores
from c2s_pipeline.cache.store import CacheReader
from c2s_pipeline.config import load_params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.data.transforms import resize_pair, view_windows
from c2s_pipeline.engines.precompute import build_store
from c2s_pipeline.runtime import keep_large_blocks_in_process
from c2s_pipeline.teacher.clip import load_clip


def bare_forwards(params, indices, region_counts) -> float:
    """Seconds for only the CLIP work precompute does on these images (decode/resize excluded)."""
    d, t = params.data, params.teacher
    ds = dataset_from_params(params, d.train_split, seen_only=True)
    device = t.device if t.device != "auto" else "cpu"
    clip = load_clip(t.clip_model, t.pretrained, image_size=d.image_size, device=device, dense_mode=t.dense_mode)
    images = np.stack([resize_pair(ds[i].image, ds[i].label, d.image_size)[0] for i in indices])
    views = view_windows(d.image_size, t.view_crops)[1:]  # the corner views' global CLS (teach_batch)
    start = time.perf_counter()
    for k in range(0, len(indices), t.batch_size):
        x = clip.preprocess(images[k : k + t.batch_size], d.image_size)
        clip.encode_images(x)
        for y, x0, s in views:
            clip.encode_crops(x[..., y : y + s, x0 : x0 + s])
        n = int(sum(region_counts[k : k + t.batch_size]))
        if n:
            clip.encode_crops(torch.zeros(n, 3, clip.native_size, clip.native_size, device=clip.device))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--dense-tokens", choices=["eval", "all"], help="override teacher.dense_tokens")
    args = ap.parse_args()
    keep_large_blocks_in_process()  # as the c2s CLI does
    params = load_params(args.params)
    if args.dense_tokens:
        params = dataclasses.replace(
            params, teacher=dataclasses.replace(params.teacher, dense_tokens=args.dense_tokens)
        )
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        path = build_store(params, split=params.data.train_split, cache_dir=cache_dir, limit=args.images or None)
        whole = time.perf_counter() - start
        reader = CacheReader(path, require_complete=False)
        indices = [i for i in range(len(reader)) if reader.is_done(i)]
        counts = [reader.read(i).region_count for i in indices]
        per_image = next(r for r in list_stores(cache_dir) if r["path"] == str(path))["bytes_per_image"]
        dense = reader.shape.dense_tokens
    forwards = bare_forwards(params, indices, counts)
    n = len(indices)
    print(f"{params.teacher.clip_model} at {params.data.image_size}px, {n} images, batch {params.teacher.batch_size}")
    print(f"  whole precompute   {n / whole:8.2f} images/s  ({whole:.1f} s, model load included)")
    print(f"  CLIP forwards only {n / forwards:8.2f} images/s  ({forwards:.1f} s)")
    print(f"  overhead = {whole / forwards - 1:+.1%}  (target < 30%)")
    print(f"  store: {per_image / 2**10:.1f} KiB per image on disk, dense tokens {'kept' if dense else 'not kept'}")


if __name__ == "__main__":
    main()
