"""Shared timing for the benchmarks: the contenders alternate call by call, device-synchronised,
so that drift in machine load (2 shared cores here) hits all of them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved_median_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, float]:
    """Median wall time per call of each fn, the fns called in turn `repeats` times after `warmup` rounds."""

    def timed(fn) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}
