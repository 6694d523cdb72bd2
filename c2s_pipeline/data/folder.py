"""Your own data, in mmsegmentation's custom layout: images and masks in split folders, and a classes file.

    <root>/classes.yaml (or classes.txt: one name per line)
    <root>/img_dir/{train,val}/<id>.jpg (or .png)
    <root>/ann_dir/{train,val}/<id>.png (single-channel or palette; the pixel value is the class id)

classes.yaml holds `classes` (names, in id order) and optionally `templates` (the prompt set: single | ensemble, or
a list of your own sentences with one {} each, e.g. ["an aerial photo of {}."]),
`reduce_zero_label` (true: mask value 0 is unlabelled and value k is class k - 1, as ADE20K's) and `ignore_index`
(default 255). The zero-shot split is `data.unseen` (class names) in params.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec
from c2s_pipeline.data.prompts import template_list
from c2s_pipeline.data.reader import (
    SegmentationDataset,
    label_ids,
    lookup_table,
    map_label,
    read_image,
    read_label,
    require_dir,
)

FOLDER_LAYOUT = (
    "<root>/{classes.yaml | classes.txt, img_dir/{train,val}/<id>.jpg|.png, "
    "ann_dir/{train,val}/<id>.png} (mmseg's custom layout)"
)
CLASSES_FILES = ("classes.yaml", "classes.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def folder_meta(root: str | Path) -> dict[str, Any]:
    """{"classes", "templates", "reduce_zero_label", "ignore_index"} from the root's classes file."""
    root = Path(root)
    found = [root / f for f in CLASSES_FILES if (root / f).is_file()]
    if not found:
        raise DatasetError(
            f"no classes file in {root}; write classes.txt (one class name per line, in id "
            f"order) or classes.yaml; expected layout: {FOLDER_LAYOUT}"
        )
    path = found[0]
    meta: dict[str, Any]
    try:
        if path.suffix == ".txt":
            meta = {
                "classes": [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            }
        else:
            meta = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} cannot be read ({err.__class__.__name__}); fix it") from None
    names = meta.get("classes") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)):
        raise DatasetError(f"{path}: 'classes' must be a non-empty list of class names")
    if len(set(names)) != len(names):
        repeated = sorted(n for n, k in Counter(names).items() if k > 1)
        raise DatasetError(f"{path}: class names must be distinct; repeated: {', '.join(repeated)}")
    meta = {
        "classes": [n.strip() for n in names],
        "templates": meta.get("templates", "single"),
        "reduce_zero_label": meta.get("reduce_zero_label", False),
        "ignore_index": meta.get("ignore_index", IGNORE_INDEX),
    }
    try:
        if not isinstance(meta["templates"], str):
            given = meta["templates"]  # a list of sentences, or something template_list refuses
            meta["templates"] = template_list(given if isinstance(given, list) else [repr(given)])
        else:
            template_list(meta["templates"])
    except DatasetError as err:
        raise DatasetError(f"{path}: {err}") from None
    if not isinstance(meta["reduce_zero_label"], bool):
        raise DatasetError(f"{path}: reduce_zero_label must be true or false")
    top = 256 - int(meta["reduce_zero_label"])
    if not (isinstance(meta["ignore_index"], int) and 0 <= meta["ignore_index"] <= 255) or len(names) >= top:
        raise DatasetError(f"{path}: masks are 8-bit: at most {top - 1} classes and an ignore_index in 0..255")
    return meta


def folder_spec(root: str | Path, unseen: tuple[str, ...] = (), meta: dict | None = None) -> DatasetSpec:
    """Classes of the folder and its zero-shot split (`data.unseen`, by name); `meta`: its folder_meta, when
    already read."""
    meta = meta or folder_meta(root)
    names = meta["classes"]
    unknown = [u for u in unseen if u not in names]
    if unknown:
        raise DatasetError(
            f"data.unseen names {', '.join(unknown)}, not classes of {root}; classes: {', '.join(names)}"
        )
    if len(set(unseen)) == len(names):
        raise DatasetError("data.unseen names every class, which leaves no seen class to train on")
    return DatasetSpec(
        "folder", tuple(names), tuple(sorted(names.index(u) for u in set(unseen))), templates=meta["templates"]
    )


def folder_lut(meta: dict) -> tuple[np.ndarray, str]:
    """(256,) mask value -> class id table of the folder's convention, and its valid range in words."""
    n, ignore = len(meta["classes"]), meta["ignore_index"]
    if meta["reduce_zero_label"]:
        mapping = {k + 1: k for k in range(n)}
        return lookup_table(mapping, valid=set(range(n + 1)) | {ignore}), f"0..{n} or {ignore}"
    return lookup_table({k: k for k in range(n)}, valid=set(range(n)) | {ignore}), f"0..{n - 1} or {ignore}"


class FolderDataset(SegmentationDataset):
    """A folder in mmseg's custom layout; a split's ids are the mask files of ann_dir/<split>.

    Args:
        root: the folder holding the classes file, img_dir and ann_dir.
        split: a sub-folder of img_dir and ann_dir ("train", "val", ...).
        seen_only: relabel unseen pixels to ignore (the training gate).
        unseen: names of the unseen classes (`data.unseen`).
    """

    LAYOUT = FOLDER_LAYOUT
    DEFAULT_SPLITS = ("train", "val")
    MISSING_IMAGE_FIX = "add it, or remove its mask (a split's ids are its mask files)"

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False, unseen: tuple[str, ...] = ()):
        root = require_dir(Path(root), "dataset root", FOLDER_LAYOUT)
        meta = folder_meta(root)
        spec = folder_spec(root, unseen, meta)
        image_dir = require_dir(root / "img_dir" / split, "image", FOLDER_LAYOUT)
        label_dir = require_dir(root / "ann_dir" / split, "mask", FOLDER_LAYOUT)
        ids = label_ids(label_dir, ".png", f"expected layout: {FOLDER_LAYOUT}")
        suffixes = Counter(p.suffix for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        lut, valid_range = folder_lut(meta)
        super().__init__(
            spec,
            split,
            ids,
            image_dir,
            label_dir,
            lut,
            image_suffix=suffixes.most_common(1)[0][0] if suffixes else ".jpg",
            seen_only=seen_only,
            valid_range=valid_range,
        )
        self.root = root


def check_folder(root: str | Path, splits: tuple[str, ...] = ("train", "val"), unseen: tuple[str, ...] = ()) -> dict:
    """Every problem of a folder before any compute, and what it holds.

    Returns {"problems": ["<file>: <what is wrong>; <what to do>", ...], "splits": {split: {"images": n,
    "pixels": {class: count}}}, "classes": [...], "unseen": [...]}; the classes file's own faults raise.
    """
    root = Path(root)
    meta = folder_meta(root)
    spec = folder_spec(root, unseen, meta)
    lut, valid_range = folder_lut(meta)
    problems: list[str] = []
    report: dict[str, dict] = {}
    for split in splits:
        image_dir, label_dir = root / "img_dir" / split, root / "ann_dir" / split
        missing = [d for d in (image_dir, label_dir) if not d.is_dir()]
        if missing:
            problems.extend(f"{d}: folder not found; expected layout: {FOLDER_LAYOUT}" for d in missing)
            continue
        images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        masks = {p.stem: p for p in label_dir.glob("*.png")}
        problems += [
            f"{images[i]}: no mask {label_dir / (i + '.png')}; add it, or remove the image"
            for i in sorted(images.keys() - masks.keys())
        ]
        problems += [
            f"{masks[i]}: no image of this id in {image_dir}; add it, or remove the mask"
            for i in sorted(masks.keys() - images.keys())
        ]
        pixels = np.zeros(spec.num_classes, np.int64)
        for i in sorted(images.keys() & masks.keys()):
            try:
                image, raw = read_image(images[i]), read_label(masks[i])
                mapped = map_label(raw, lut, masks[i], valid_range)
            except DatasetError as err:
                problems.append(str(err))
                continue
            if image.shape[:2] != raw.shape:
                problems.append(
                    f"{masks[i]}: {raw.shape[1]}x{raw.shape[0]}, its image is {image.shape[1]}x"
                    f"{image.shape[0]}; resize or re-export the pair"
                )
                continue
            pixels += np.bincount(mapped[mapped != IGNORE_INDEX].ravel(), minlength=spec.num_classes)
        report[split] = {
            "images": len(images.keys() & masks.keys()),
            "pixels": dict(zip(spec.class_names, pixels.tolist())),
        }
    return {
        "problems": problems,
        "splits": report,
        "classes": list(spec.class_names),
        "unseen": [spec.class_names[i] for i in spec.unseen],
    }
