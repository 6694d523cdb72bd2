"""Shared timing helper for the benchmarks: median wall time of repeated calls, device-synchronised."""
from __future__ import annotations

import statistics
import time

import torch


def median_seconds(fn, repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_fps(fns: dict, example: torch.Tensor, warmup: int, rounds: int, device: str = "cpu") -> dict:
    """Frames/s of each fn(example), timed in alternating rounds so drift in machine load hits all alike."""
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(warmup):
                fn(example)
        seconds = dict.fromkeys(fns, 0.0)
        for _ in range(rounds):
            for name, fn in fns.items():
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn(example)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[name] += time.perf_counter() - start
    return {name: rounds / s for name, s in seconds.items()}
