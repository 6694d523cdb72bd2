"""Inference speed and size: FPS by the Cascade-CLIP protocol (batch 1, warm-up, synchronised)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def measure_fps(
    fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int, iters: int, device
) -> float:
    for _ in range(warmup):
        fn(example)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn(example)
    _sync(device)
    return iters / (time.perf_counter() - start)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: torch.nn.Module, example: torch.Tensor) -> float | None:
    """Forward FLOPs of one call (None when an op cannot be counted)."""
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(example)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - FLOPs are informative only
        return None
