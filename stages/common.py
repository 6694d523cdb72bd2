"""What the command line shares: logging; the device, seeds and allocator are the library's (runtime.py)."""
from __future__ import annotations

import logging

from c2s_pipeline.runtime import DeviceError, keep_large_blocks_in_process, resolve_device, seed_everything

__all__ = ["DeviceError", "keep_large_blocks_in_process", "resolve_device", "seed_everything", "setup_logging"]

log = logging.getLogger("c2s")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
