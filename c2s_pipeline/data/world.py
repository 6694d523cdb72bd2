"""The generated world: the VOC layout directly under its root, classes and unseen split from root/world.json."""

from __future__ import annotations

import json
from pathlib import Path

from c2s_pipeline.config import WorldConfig
from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.voc import VOCLayoutDataset

WORLD_META = "world.json"
DEFAULT_UNSEEN = WorldConfig().unseen
WORLD_LAYOUT = "<root>/{world.json, JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}"


def world_spec(root: str | Path, unseen: tuple[str, ...] = DEFAULT_UNSEEN) -> DatasetSpec:
    """The world's DatasetSpec: class names from root/world.json, the unseen classes by name (`world.unseen`).

    The generator (c2s_pipeline/world/generator.py) writes world.json; the split is a parameter, so
    changing it needs no new images. No unseen class is a world read as another run's target vocabulary
    (cross-dataset evaluation); params refuse an empty `world.unseen` for training.
    """
    path = Path(root) / WORLD_META
    if not path.is_file():
        raise DatasetError(f"{path} not found; generate the world with `c2s world generate --out {root}`")
    try:
        names = json.loads(path.read_text())["class_names"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{path} is not a world description ({err.__class__.__name__}: {err}); "
            "it needs 'class_names': regenerate the world"
        ) from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise DatasetError(f"{path}: 'class_names' must be a non-empty list of strings; regenerate the world")
    unknown = [u for u in unseen if u not in names]
    if unknown or len(set(unseen)) != len(unseen):
        raise DatasetError(
            f"world.unseen {list(unseen)} must name distinct classes of the world "
            f"({'unknown: ' + ', '.join(unknown) if unknown else 'each once'}); "
            f"classes: {', '.join(names)}"
        )
    if len(set(unseen)) == len(names):
        raise DatasetError(
            "world.unseen names every class, which leaves no seen class to train on; keep at least one class out of it"
        )
    return DatasetSpec("world", tuple(names), tuple(sorted(names.index(u) for u in unseen)), templates="single")


class WorldDataset(VOCLayoutDataset):
    """The generated world (same 0 = background encoding as VOC).

    Args:
        root: the folder holding world.json, JPEGImages, SegmentationClass and ImageSets.
        split: "train" | "val".
        unseen: names of the unseen classes (`world.unseen`).
        seen_only: relabel unseen pixels to ignore (the training gate).
    """

    LAYOUT = WORLD_LAYOUT
    DEFAULT_SPLITS = ("train", "val")

    def __init__(
        self, root: str | Path, split: str, *, seen_only: bool = False, unseen: tuple[str, ...] = DEFAULT_UNSEEN
    ):
        spec = world_spec(root, unseen)  # first: a missing world gets "generate it", not a layout lecture
        super().__init__(Path(root), split, spec, seen_only=seen_only, layout=WORLD_LAYOUT)
