"""The generated world: the VOC layout directly under its root, classes and unseen split from root/world.json."""
from __future__ import annotations

import json
from pathlib import Path

from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.reader import require_dir
from c2s_pipeline.data.voc import VOCLayoutDataset

WORLD_META = "world.json"
WORLD_LAYOUT = "<root>/{world.json, JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}"


def world_spec(root: str | Path) -> DatasetSpec:
    """The world's DatasetSpec from root/world.json ({"class_names": [...], "unseen": [...], ...}).

    The generator (c2s_pipeline/world/generator.py) writes that file; nothing else defines the split.
    """
    path = Path(root) / WORLD_META
    if not path.is_file():
        raise DatasetError(f"{path} not found; generate the world with `c2s world generate --out {root}`")
    try:
        meta = json.loads(path.read_text())
        names, unseen = meta["class_names"], meta["unseen"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path} is not a world description ({err.__class__.__name__}: {err}); "
                           "it needs 'class_names' and 'unseen': regenerate the world") from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise DatasetError(f"{path}: 'class_names' must be a non-empty list of strings; regenerate the world")
    if not (isinstance(unseen, list) and len(set(unseen)) == len(unseen)
            and all(isinstance(u, int) and 0 <= u < len(names) for u in unseen)):
        raise DatasetError(f"{path}: 'unseen' must list distinct class ids in 0..{len(names) - 1}; "
                           "regenerate the world")
    return DatasetSpec("world", tuple(names), tuple(unseen), templates="single")


class WorldDataset(VOCLayoutDataset):
    """The generated world (same 0 = background encoding as VOC).

    Args:
        root: the folder holding world.json, JPEGImages, SegmentationClass and ImageSets.
        split: "train" | "val".
        seen_only: relabel unseen pixels to ignore (the training gate).
    """

    LAYOUT = WORLD_LAYOUT
    DEFAULT_SPLITS = ("train", "val")

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False):
        spec = world_spec(root)   # first: a missing world gets "generate it", not a layout lecture
        super().__init__(Path(root), split, spec, seen_only=seen_only, layout=WORLD_LAYOUT)
