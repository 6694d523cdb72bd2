"""Dataset names -> builders; the one place that lists what `--dataset` accepts."""
from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.cocostuff import COCO_LAYOUT, COCOSTUFF_SPEC, build_cocostuff
from c2s_pipeline.data.context import CONTEXT_LAYOUT, build_context, context_spec
from c2s_pipeline.data.reader import SegmentationDataset
from c2s_pipeline.data.voc import VOC_LAYOUT, VOC_SPEC, build_voc
from c2s_pipeline.data.world import WORLD_LAYOUT, build_world, world_spec

DATASETS = {"voc": build_voc, "context": build_context, "cocostuff": build_cocostuff, "world": build_world}
DEFAULT_SPLITS = {"voc": ("train_aug", "val"), "context": ("train", "val"),
                  "cocostuff": ("train", "val"), "world": ("train", "val")}
LAYOUTS = {"voc": VOC_LAYOUT, "context": CONTEXT_LAYOUT, "cocostuff": COCO_LAYOUT, "world": WORLD_LAYOUT}


def _check(name: str) -> None:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")


def build_dataset(name: str, root: str | Path, split: str, *, seen_only: bool = False,
                  context_unseen_split: str = "A") -> SegmentationDataset:
    """A reader over `root` in the dataset's standard layout; seen_only=True is the training gate."""
    _check(name)
    return DATASETS[name](root, split, seen_only=seen_only, context_unseen_split=context_unseen_split)


def dataset_spec(name: str, root: str | Path | None = None, context_unseen_split: str = "A") -> DatasetSpec:
    _check(name)
    if name == "world":
        if root is None:
            raise DatasetError("the world's classes live in <root>/world.json; pass its root")
        return world_spec(root)
    return {"voc": VOC_SPEC, "cocostuff": COCOSTUFF_SPEC}.get(name) or context_spec(context_unseen_split)


def describe_datasets(world_root: str | Path | None = None) -> list[dict]:
    """One row per dataset for `c2s datasets` (the world only when its root exists)."""
    rows = []
    for name in DATASETS:
        try:
            spec = dataset_spec(name, world_root)
        except DatasetError as err:
            rows.append({"dataset": name, "note": str(err)})
            continue
        rows.append({"dataset": name, "classes": spec.num_classes, "seen": len(spec.seen),
                     "unseen": len(spec.unseen), "unseen_names": [spec.class_names[i] for i in spec.unseen],
                     "splits": list(DEFAULT_SPLITS[name]), "templates": spec.templates,
                     "layout": LAYOUTS[name]})
    return rows
