"""The generated world: the VOC layout under its root plus world.json naming classes and the split."""
from __future__ import annotations

import json
from pathlib import Path

from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset
from c2s_pipeline.data.voc import voc_layout_dataset

WORLD_META = "world.json"
WORLD_LAYOUT = "<root>/{world.json, JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}"


def world_spec(root: str | Path) -> DatasetSpec:
    path = Path(root) / WORLD_META
    if not path.is_file():
        raise DatasetError(f"{path} not found; generate the world with `c2s world generate --out {root}`")
    meta = json.loads(path.read_text())
    return DatasetSpec("world", tuple(meta["class_names"]), tuple(meta["unseen"]), templates="single")


def build_world(root: str | Path, split: str, *, seen_only: bool = False, **_) -> SegmentationDataset:
    return voc_layout_dataset(Path(root), split, world_spec(root), seen_only=seen_only,
                              layout=WORLD_LAYOUT)
