"""Write-then-rename: the one way this package replaces a file a user keeps (checkpoints, pointers, logs); and
the one exclusive lock a writer of a store or a run folder holds."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it is renamed over `path`.

    A kill or a failed write (full disk, no permission) leaves the previous `path` as it was and no
    temporary file. The temporary name carries the process id, so two processes never share it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Replace `path` by `text` (see `replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload: dict) -> Path:
    """Atomic JSON write so a killed stage never leaves half a file."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def exclusive_lock(lock: str | Path, in_use: Exception) -> Iterator[None]:
    """Hold an flock on the file `lock` for the block, or raise `in_use` (one line: what is in use, what to do) at
    once if another process holds it. The kernel releases it when its process dies: a kill -9 leaves no lock
    that blocks."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise in_use from None
        yield
