"""What every dataset reader shares: the class spec, the sample type and the seen-only gate."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


class DatasetError(RuntimeError):
    """Bad dataset input; the message is one line naming the file and what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """Vocabulary and zero-shot split of a dataset (class ids are 0..C-1 after mapping)."""

    name: str
    class_names: tuple[str, ...]
    unseen: tuple[int, ...]
    templates: str = "single"     # prompt set for text embeddings: single | ensemble

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
    image: np.ndarray   # (H, W, 3) uint8 RGB
    label: np.ndarray   # (H, W) uint8 class ids 0..C-1, IGNORE_INDEX elsewhere
    id: str


def to_seen_only(label: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Relabel unseen-class pixels to IGNORE_INDEX: the single gate training data passes through."""
    out = label.copy()
    out[np.isin(out, np.asarray(spec.unseen, dtype=out.dtype))] = IGNORE_INDEX
    return out
