"""What the command line shares: logging (the device, seeds and allocator are the library's: runtime.py)."""

from __future__ import annotations

import logging

log = logging.getLogger("c2s")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
