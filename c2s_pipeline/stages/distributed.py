"""torchrun integration: rank/world from the environment, gloo on CPU and nccl on GPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_distributed() -> tuple[int, int, Callable[[], Any] | None]:
    """Join the torchrun process group; returns (rank, world_size, barrier).

    Without torchrun's variables this is a one-process world, so `--distributed` is harmless.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        log.warning("--distributed given but no torchrun environment found; running as one process")
        return 0, 1, None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), dist.barrier
