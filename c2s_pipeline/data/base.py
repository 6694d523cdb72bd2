"""What every dataset reader shares: the class spec, the sample type and the seen-only gate."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


class DatasetError(RuntimeError):
    """Bad dataset input; the message is one line naming the file and what to do."""


def as_in_main_process(loader):
    """An iterator over `loader`; an error raised in one of its workers comes out as it would with workers 0.

    torch re-raises a worker's exception with the worker's whole traceback as its message, so a one-line
    DatasetError (a corrupt image, a label out of range) would reach the user as twenty lines. The same
    type is raised with the original message; the worker's traceback goes to the debug log and the chain.
    The loader's iterator is created here, at once: that draws from the global RNG (resume depends on when).
    """
    return _reraise_from_workers(iter(loader))


def _reraise_from_workers(batches):
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - re-raised, shortened only when it comes from a worker
            text = str(err)
            if not (text.startswith("Caught ") and "DataLoader worker" in text.split("\n", 1)[0]):
                raise
            log.debug("%s", text)
            last = text.rstrip().splitlines()[-1]  # "package.module.Type: the original message"
            raise _rebuilt(type(err), last.split(": ", 1)[-1]) from err
        yield batch


_OS_ERROR = re.compile(r"\[Errno (\d+)\] (.*?)(?:: '(.*)')?$")  # str(OSError(errno, strerror, filename))


def _rebuilt(kind: type, message: str) -> Exception:
    """The worker's exception again; an OSError keeps its errno, reason and file name (the CLI names the file)."""
    match = _OS_ERROR.match(message) if issubclass(kind, OSError) else None
    if match:
        errno, strerror, filename = match.groups()
        return kind(int(errno), strerror, filename) if filename else kind(int(errno), strerror)
    return kind(message)


@dataclass(frozen=True)
class DatasetSpec:
    """Vocabulary and zero-shot split of a dataset (class ids are 0..C-1 after mapping)."""

    name: str
    class_names: tuple[str, ...]
    unseen: tuple[int, ...]
    # the dataset's own prompt set (ZegCLIP's): single | ensemble, or a folder's own templates (data/prompts.py)
    templates: str | tuple[str, ...] = "single"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompt_set(self, setting: str) -> str | tuple[str, ...]:
        """teacher.templates resolved: "auto" is this dataset's own set, anything else is taken as given."""
        return self.templates if setting == "auto" else setting

    @property
    def seen(self) -> tuple[int, ...]:
        unseen = set(self.unseen)
        return tuple(i for i in range(self.num_classes) if i not in unseen)

    def seen_mask(self) -> np.ndarray:
        """(C,) bool, True for seen classes."""
        mask = np.ones(self.num_classes, dtype=bool)
        mask[list(self.unseen)] = False
        return mask


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) uint8 class ids 0..C-1, IGNORE_INDEX elsewhere
    id: str


def to_seen_only(label: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Relabel unseen-class pixels to IGNORE_INDEX: the single gate training data passes through."""
    out = label.copy()
    out[np.isin(out, np.asarray(spec.unseen, dtype=out.dtype))] = IGNORE_INDEX
    return out
