"""What every engine shares at run time: the device, the seeds, the allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random

import numpy as np
import torch


class DeviceError(RuntimeError):
    """A device name torch does not know, or one this machine does not have."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; a CUDA request on a machine without one fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device '{name}' requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def keep_large_blocks_in_process() -> bool:
    """Stop glibc from giving every block over 32 MiB back to the OS when it is freed (Linux, glibc only).

    At 512 px a CPU step allocates and frees many such tensors (a B x C x 512 x 512 logit map, the
    B x 512 x 128 x 128 feature map); by default each one is a fresh mmap whose pages fault in zeroed,
    which cost ~20 % of a step here (benchmarks/train_step.py) and made it depend on whether a tensor
    happens to fall below the threshold. Serving them from the heap is what PyTorch's CPU tuning guide gets
    with jemalloc/tcmalloc; set C2S_SYSTEM_MALLOC=1 to keep glibc's defaults. Returns whether it applied.
    """
    if os.environ.get("C2S_SYSTEM_MALLOC") == "1":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:  # not glibc (macOS, musl, Windows): nothing to do
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    # No mmap for large blocks; return heap memory to the OS only when 1 GiB sits free at its top.
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
