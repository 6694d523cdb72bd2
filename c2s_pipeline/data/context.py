"""PASCAL Context 59 in mmsegmentation's layout (reduce_zero_label), with a choice of unseen split."""

from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, find_base, lookup_table, read_split, require_dir

# mmseg PascalContextDataset59.METAINFO['classes'] (mmseg/datasets/pascal_context.py; same order as
# mmseg/utils/class_names.py pcontext_classes): raw label k in 1..59 is class k-1.
CONTEXT_CLASSES = (
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)
# Two published 10-class unseen splits (shared/REFERENCE.md):
#   A: ZS3Net, MaskCLIP+, OTSeg: aeroplane, bird, boat, cat, cow, fence, keyboard, motorbike, sofa, tvmonitor.
#   B: Cascade-CLIP: aeroplane, bed, bedclothes, boat, bottle, car, cloth, cow, keyboard, plate.
CONTEXT_UNSEEN = {
    "A": (0, 6, 7, 14, 19, 24, 31, 33, 48, 54),
    "B": (0, 2, 3, 7, 9, 13, 17, 19, 31, 37),
}
CONTEXT_LAYOUT = (
    "VOCdevkit/VOC2010/{JPEGImages/*.jpg, SegmentationClassContext/*.png, "
    "ImageSets/SegmentationContext/{train,val}.txt} (mmseg tools/dataset_converters/pascal_context.py)"
)


def context_spec(unseen_split: str = "A") -> DatasetSpec:
    """PASCAL Context 59 spec with unseen split "A" (default) or "B"."""
    if unseen_split not in CONTEXT_UNSEEN:
        raise DatasetError(
            f"unknown PASCAL Context unseen split '{unseen_split}'; choose one of "
            f"{', '.join(CONTEXT_UNSEEN)} (data.context_unseen_split)"
        )
    return DatasetSpec("context", CONTEXT_CLASSES, CONTEXT_UNSEEN[unseen_split], templates="ensemble")


class ContextDataset(SegmentationDataset):
    """PASCAL Context 59: train 4,996 / val 5,104; raw 0 = background -> ignore, k -> k-1.

    Args:
        root: VOCdevkit/VOC2010, or a folder above it.
        split: "train" | "val" (files under ImageSets/SegmentationContext).
        seen_only: relabel unseen pixels to ignore (the training gate).
        unseen_split: "A" | "B", see CONTEXT_UNSEEN.
    """

    LAYOUT = CONTEXT_LAYOUT
    DEFAULT_SPLITS = ("train", "val")

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False, unseen_split: str = "A"):
        spec = context_spec(unseen_split)
        base = find_base(root, ("VOC2010", "VOCdevkit/VOC2010"), marker="SegmentationClassContext")
        require_dir(base, "dataset root", CONTEXT_LAYOUT)
        image_dir = require_dir(base / "JPEGImages", "image", CONTEXT_LAYOUT)
        label_dir = require_dir(base / "SegmentationClassContext", "label", CONTEXT_LAYOUT)
        ids = read_split(base / "ImageSets" / "SegmentationContext" / f"{split}.txt", CONTEXT_LAYOUT)
        lut = lookup_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, 60)}}, valid=set(range(60)) | {IGNORE_INDEX})
        super().__init__(spec, split, ids, image_dir, label_dir, lut, seen_only=seen_only, valid_range="0..59 or 255")
        self.root = base
