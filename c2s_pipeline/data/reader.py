"""A segmentation dataset on disk: image folder + label folder + split file, with a label lookup table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec, Sample, to_seen_only


def require_dir(path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} folder {path} not found; expected layout: {layout}")
    return path


def read_split(path: Path, layout: str) -> list[str]:
    """Image ids, one per line, of a split file."""
    if not path.is_file():
        raise DatasetError(f"split file {path} not found; expected layout: {layout}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split file {path} lists no images; regenerate or re-download it")
    return ids


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a missing or corrupt file is a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"image {path} not found; restore it or remove its id from the split file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"image {path} is corrupt or truncated ({err.__class__.__name__}); "
                           "re-download it or remove its id from the split file") from None


def read_label(path: Path) -> np.ndarray:
    """(H, W) uint8 raw label indices (palette PNGs give their indices, not colours)."""
    if not path.is_file():
        raise DatasetError(f"label {path} not found; every id in the split file needs a label PNG")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"label {path} has mode {im.mode}; expected an index PNG (P or L)")
            arr = np.asarray(im)
    except OSError as err:
        raise DatasetError(f"label {path} is corrupt ({err.__class__.__name__}); re-download it") from None
    if arr.max(initial=0) > 255:
        raise DatasetError(f"label {path} has value {int(arr.max())} > 255; expected 8-bit class indices")
    return arr.astype(np.uint8)


def lookup_table(mapping: dict[int, int], valid: set[int]) -> np.ndarray:
    """256-entry table raw -> mapped; raw values outside `valid` map to -1 (flagged as out of range)."""
    lut = np.full(256, -1, dtype=np.int16)
    for raw in valid:
        lut[raw] = mapping.get(raw, IGNORE_INDEX)
    return lut


class SegmentationDataset:
    """Reads (image, mapped label, id); `seen_only=True` relabels unseen pixels to ignore."""

    def __init__(self, spec: DatasetSpec, split: str, ids: list[str], image_dir: Path, label_dir: Path,
                 lut: np.ndarray, *, image_suffix: str = ".jpg", label_suffix: str = ".png",
                 seen_only: bool = False, valid_range: str = ""):
        self.spec, self.split, self.ids = spec, split, list(ids)
        self.image_dir, self.label_dir = image_dir, label_dir
        self.image_suffix, self.label_suffix = image_suffix, label_suffix
        self.lut, self.seen_only, self.valid_range = lut, seen_only, valid_range

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.image_dir / f"{self.ids[i]}{self.image_suffix}"

    def label_path(self, i: int) -> Path:
        return self.label_dir / f"{self.ids[i]}{self.label_suffix}"

    def load_label(self, i: int) -> np.ndarray:
        """(H, W) uint8 mapped label, seen-only when the dataset was built so."""
        raw = read_label(self.label_path(i))
        mapped = self.lut[raw]
        if (mapped < 0).any():
            bad = int(raw[mapped < 0][0])
            raise DatasetError(f"label {self.label_path(i)} has value {bad} outside {self.valid_range}; "
                               "the file does not match this dataset's label encoding")
        mapped = mapped.astype(np.uint8)
        return to_seen_only(mapped, self.spec) if self.seen_only else mapped

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self.ids):
            raise IndexError(i)
        image, label = read_image(self.image_path(i)), self.load_label(i)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"image {self.image_path(i)} is {image.shape[1]}x{image.shape[0]} but its "
                               f"label is {label.shape[1]}x{label.shape[0]}; fix or remove the pair")
        return Sample(image=image, label=label, id=self.ids[i])
