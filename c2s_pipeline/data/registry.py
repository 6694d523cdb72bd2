"""Dataset names -> reader classes; the one place that lists what `--dataset` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from c2s_pipeline.config import Params
from c2s_pipeline.data.ade20k import ADE20KDataset, ade20k_spec
from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.cocostuff import COCOSTUFF_SPEC, CocoStuffDataset
from c2s_pipeline.data.context import ContextDataset, context_spec
from c2s_pipeline.data.folder import FolderDataset, folder_spec
from c2s_pipeline.data.reader import SegmentationDataset
from c2s_pipeline.data.voc import VOC_SPEC, VOCDataset
from c2s_pipeline.data.world import WorldDataset, world_spec

DATASETS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCDataset,
    "context": ContextDataset,
    "cocostuff": CocoStuffDataset,
    "world": WorldDataset,
    "ade20k": ADE20KDataset,
    "folder": FolderDataset,
}


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The reader class of `name`; an unknown name is a one-line DatasetError listing the choices."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    seen_only: bool = False,
    context_unseen_split: str = "A",
    world_unseen: tuple[str, ...] | None = None,
    unseen: tuple[str, ...] = (),
) -> SegmentationDataset:
    """A reader over `root` in the dataset's standard layout.

    Args:
        name: one of DATASETS.
        root: dataset folder (see each class's LAYOUT; VOC/Context also accept the folder above VOCdevkit).
        split: split name, e.g. "train_aug" | "val" for VOC, "train" | "val" for the others.
        seen_only: relabel unseen pixels to ignore: True for every training use (the inductive gate).
        context_unseen_split: "A" | "B", used by "context" only.
        world_unseen: unseen class names, used by "world" only (None = its default split).
        unseen: unseen class names, used by "folder" and "ade20k" only (`data.unseen`).
    """
    cls: Any = dataset_class(name)  # each reader's own constructor
    if cls in (FolderDataset, ADE20KDataset):
        return cls(root, split, seen_only=seen_only, unseen=unseen)
    if cls is ContextDataset:
        return cls(root, split, seen_only=seen_only, unseen_split=context_unseen_split)
    if cls is WorldDataset and world_unseen is not None:
        return cls(root, split, seen_only=seen_only, unseen=world_unseen)
    return cls(root, split, seen_only=seen_only)


def dataset_from_params(params: Params, split: str, *, seen_only: bool = False) -> SegmentationDataset:
    """The dataset `params` describe (data section, Context split, world split), for one split."""
    d = params.data
    return build_dataset(
        d.dataset,
        d.root,
        split,
        seen_only=seen_only,
        context_unseen_split=d.context_unseen_split,
        world_unseen=params.world.unseen,
        unseen=d.unseen,
    )


def dataset_spec(
    name: str, root: str | Path | None = None, context_unseen_split: str = "A", unseen: tuple[str, ...] = ()
) -> DatasetSpec:
    """Classes and unseen split of `name` without reading images ("world" reads root/world.json, "folder" its
    classes file, with `unseen` by name)."""
    cls = dataset_class(name)
    if cls is FolderDataset:
        if root is None:
            raise DatasetError("a dataset folder's classes live in <root>/classes.yaml or classes.txt; pass its root")
        return folder_spec(root, unseen)
    if cls is ADE20KDataset:
        return ade20k_spec(unseen)
    if cls is WorldDataset:
        if root is None:
            raise DatasetError("the world's classes live in <root>/world.json; pass the world's root")
        return world_spec(root)
    if cls is ContextDataset:
        return context_spec(context_unseen_split)
    return {VOCDataset: VOC_SPEC, CocoStuffDataset: COCOSTUFF_SPEC}[cls]


def describe_datasets(world_root: str | Path | None = None, context_unseen_split: str = "A") -> list[dict]:
    """One row per dataset for `c2s datasets` (the world's classes only when `world_root` is given).

    Row keys: dataset, classes, seen, unseen (counts), unseen_names, splits (defaults: train, eval),
    templates, layout; a dataset whose spec cannot be read gets dataset, splits, layout and a note.
    """
    rows = []
    for name, cls in DATASETS.items():
        row: dict[str, Any] = {"dataset": name}
        try:
            spec = dataset_spec(name, world_root, context_unseen_split)
        except DatasetError as err:
            row["note"] = str(err)
        else:
            row.update(
                classes=spec.num_classes,
                seen=len(spec.seen),
                unseen=len(spec.unseen),
                unseen_names=[spec.class_names[i] for i in spec.unseen],
                templates=spec.templates,
            )
        row.update(splits=list(cls.DEFAULT_SPLITS), layout=cls.LAYOUT)
        rows.append(row)
    return rows
