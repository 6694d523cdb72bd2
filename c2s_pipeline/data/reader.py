"""The reader every dataset shares: image folder + label folder + id list, labels mapped by a lookup table."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec, Sample, to_seen_only
from c2s_pipeline.data.images import ImageError, decode

logger = logging.getLogger(__name__)

_INDEX_MODES = ("P", "L", "I", "I;16")  # PIL modes whose pixels are class indices, not colours


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return `path` if it is a folder, else a one-line DatasetError naming it and the expected layout."""
    if not path.is_dir():
        raise DatasetError(f"{what} folder {path} not found; expected layout: {layout}")
    return path


def find_base(root: str | Path, below: tuple[str, ...], marker: str) -> Path:
    """The folder holding `marker`: `root` itself or `root/<below>` (so users may point at either).

    Args:
        root: what the user passed.
        below: relative paths tried after `root`, shallowest first (e.g. "VOCdevkit/VOC2012").
        marker: a sub-folder that identifies the dataset folder (e.g. "JPEGImages").

    Returns:
        The first candidate containing `marker`; else the deepest existing candidate (so the
        error that follows names the most specific missing folder); else `root`.
    """
    root = Path(root)
    candidates = [root, *(root / b for b in below)]
    for candidate in candidates:
        if (candidate / marker).is_dir():
            return candidate
    existing = [c for c in candidates if c.is_dir()]
    return existing[-1] if existing else root


def images_and_annotations(
    root: str | Path, split: str, splits: dict[str, str], below: str, layout: str, name: str
) -> tuple[Path, Path, Path]:
    """(base, image folder, label folder) of a dataset laid out as `<below>/{images,annotations}/<folder>`,
    the folder of `split` given by `splits` (COCO-Stuff's and ADE20K's mmseg layouts); one-line errors."""
    folder = splits.get(split, split)
    if folder not in splits.values():
        raise DatasetError(f"unknown {name} split '{split}'; choose one of {', '.join(splits)}")
    base = find_base(root, (below,), marker="annotations")
    require_dir(base, "dataset root", layout)
    return (
        base,
        require_dir(base / "images" / folder, "image", layout),
        require_dir(base / "annotations" / folder, "label", layout),
    )


def label_ids(label_dir: Path, suffix: str, fix: str) -> list[str]:
    """Sorted ids of a split whose ids are its label files `<id><suffix>`; none is a DatasetError saying `fix`."""
    ids = sorted(p.name[: -len(suffix)] for p in label_dir.glob(f"*{suffix}"))
    if not ids:
        raise DatasetError(f"no *{suffix} files in {label_dir}; {fix}")
    return ids


def read_split(path: Path, layout: str) -> list[str]:
    """Image ids of a split file: one per line; DeepLab-style "/JPEGImages/x.jpg ..." lines give "x"."""
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        hint = f"available splits: {', '.join(found)}; " if found else ""
        raise DatasetError(f"split file {path} not found; {hint}expected layout: {layout}")
    ids = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():  # a BOM or CRLF line ends read cleanly
        if line.strip():
            token = line.split()[0]
            ids.append(Path(token).stem if "/" in token or token.endswith(".jpg") else token)
    if not ids:
        raise DatasetError(f"split file {path} lists no images; regenerate or re-download it")
    return ids


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, writable; a missing, corrupt, oversized or non-image file is a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"image {path} not found; restore it or remove its id from the split file")
    try:
        return np.array(decode(path, "RGB"))
    except ImageError as err:
        raise DatasetError(f"{err}; or remove its id from the split file") from None


def read_label(path: Path) -> np.ndarray:
    """(H, W) uint8 raw label indices (palette PNGs give their indices, not colours)."""
    if not path.is_file():
        raise DatasetError(f"label {path} not found; every id in the split file needs a label PNG")
    try:
        im = decode(path, mode=None)
    except ImageError as err:
        raise DatasetError(
            f"label {path} {err.problem}; labels are index PNGs: re-download the dataset's label files"
        ) from None
    if im.mode not in _INDEX_MODES:
        raise DatasetError(
            f"label {path} has mode {im.mode}; expected an index PNG (mode P or L), "
            "not colours: convert it or re-download the dataset's label files"
        )
    arr = np.asarray(im)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        bad = int(arr.max()) if arr.max() > 255 else int(arr.min())
        raise DatasetError(f"label {path} has value {bad}, outside 0..255; expected 8-bit class indices")
    return arr.astype(np.uint8)


def lookup_table(mapping: dict[int, int], valid: set[int]) -> np.ndarray:
    """(256,) int16 table raw -> mapped; raw values outside `valid` map to -1 (out of range).

    Valid raw values missing from `mapping` map to IGNORE_INDEX.
    """
    lut = np.full(256, -1, dtype=np.int16)
    for raw in valid:
        lut[raw] = mapping.get(raw, IGNORE_INDEX)
    return lut


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path, valid_range: str) -> np.ndarray:
    """(H, W) uint8 raw -> (H, W) uint8 mapped ids; a raw value outside the encoding is a DatasetError."""
    mapped = lut[raw]  # (H, W) int16, -1 where out of range
    bad = mapped < 0
    if bad.any():
        values = sorted(set(np.unique(raw[bad]).tolist()))
        raise DatasetError(
            f"label {path} has value {values[0]} outside {valid_range} "
            f"({int(bad.sum())} pixels, values {values[:5]}); the file does not match this "
            "dataset's label encoding: re-download or re-convert it"
        )
    return mapped.astype(np.uint8)


class SegmentationDataset:
    """Reads (image, mapped label, id) at full resolution; `seen_only=True` relabels unseen pixels to ignore.

    Subclasses resolve a dataset's layout and call this constructor.

    Args:
        spec: classes and zero-shot split.
        split: split name as the user gave it.
        ids: image ids, in order.
        image_dir: folder of `<id><image_suffix>` files.
        label_dir: folder of `<id><label_suffix>` files.
        lut: (256,) raw -> mapped table from `lookup_table`.
        seen_only: apply `base.to_seen_only` to every label (the training gate).
        valid_range: human-readable raw range for error messages, e.g. "0..20 or 255".
    """

    LAYOUT = ""  # expected folder layout, one line (subclasses set both)
    DEFAULT_SPLITS: tuple[str, ...] = ()  # (training split, evaluation split)
    MISSING_IMAGE_FIX = "restore it or remove its id from the split file"

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        ids: list[str],
        image_dir: Path,
        label_dir: Path,
        lut: np.ndarray,
        *,
        image_suffix: str = ".jpg",
        label_suffix: str = ".png",
        seen_only: bool = False,
        valid_range: str = "",
    ):
        self.spec, self.split, self.ids = spec, split, list(ids)
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        self.image_suffix, self.label_suffix = image_suffix, label_suffix
        self.lut, self.seen_only, self.valid_range = lut, seen_only, valid_range
        logger.debug("%r: images %s, labels %s", self, self.image_dir, self.label_dir)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec.name!r}, split={self.split!r}, n={len(self.ids)}, "
            f"seen_only={self.seen_only})"
        )

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.image_dir / f"{self.ids[i]}{self.image_suffix}"

    def label_path(self, i: int) -> Path:
        return self.label_dir / f"{self.ids[i]}{self.label_suffix}"

    def load_image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image i; a missing one names a file of that id under another extension."""
        path = self.image_path(i)
        if not path.is_file():
            others = sorted(p.name for p in path.parent.glob(f"{glob.escape(path.stem)}.*") if p != path)
            there = f" ({', '.join(others)} is there: convert it to {path.suffix})" if others else ""
            raise DatasetError(f"image {path} not found{there}; {self.MISSING_IMAGE_FIX}")
        return read_image(path)

    def load_label(self, i: int) -> np.ndarray:
        """(H, W) uint8 mapped label i, seen-only when the dataset was built so."""
        path = self.label_path(i)
        mapped = map_label(read_label(path), self.lut, path, self.valid_range)
        return to_seen_only(mapped, self.spec) if self.seen_only else mapped

    def __getitem__(self, i: int) -> Sample:
        if not -len(self.ids) <= i < len(self.ids):
            raise IndexError(f"index {i} out of range for {len(self.ids)} images")
        i = i % len(self.ids)
        image, label = self.load_image(i), self.load_label(i)
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"image {self.image_path(i)} is {image.shape[1]}x{image.shape[0]} but its label "
                f"{self.label_path(i)} is {label.shape[1]}x{label.shape[0]}; fix or remove the pair"
            )
        return Sample(image=image, label=label, id=self.ids[i])
