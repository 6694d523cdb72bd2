"""The one loader of torch files a user may get from elsewhere (student.pt, checkpoint.pt, vocab.pt, encoder
weights): it never runs code, and every failure is one line that says what to do."""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A student, checkpoint or vocabulary file that is missing, refused, unreadable or not resumable; what to do."""


def safe_load(path: str | Path, what: str, fix: str, *, keys: tuple[str, ...] = ()) -> dict:
    """torch.load with weights_only=True, onto the CPU; every failure becomes one CheckpointError line.

    Full unpickling would run whatever a crafted file asks for, so only tensors and plain values load.
    `what` names the kind of file ("student"), `fix` says what to do instead, and `keys` are entries every
    c2s file of that kind has (so another torch file is named as such, not met later as a KeyError).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; {fix}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a file it may be about to refuse; the user gets one line.
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's restricted unpickler refused it: a crafted pickle, or one too damaged to tell apart.
        log.debug("refused %s", path, exc_info=True)
        raise CheckpointError(
            f"{path} is not a safe c2s {what} file: it asks for more than tensors and plain "
            f"values (code could run), so it was not loaded; {fix}"
        ) from None
    except Exception as err:  # noqa: BLE001 - damage surfaces as RuntimeError, EOFError, KeyError, zip errors...
        log.debug("cannot read %s", path, exc_info=True)
        raise CheckpointError(
            f"{path} is not a valid c2s {what} file: it is corrupt or truncated ({err.__class__.__name__}); {fix}"
        ) from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a c2s {what} file (no {', '.join(missing)}); {fix}")
    return obj
