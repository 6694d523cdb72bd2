"""PASCAL VOC 2012 (+ SBD aug) in the VOCdevkit layout, and the VOC-layout reader the generated world reuses."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, find_base, lookup_table, read_split, require_dir

# Class names as the dataset spells them (VOC devkit; mmseg PascalVOCDataset minus 'background').
# Unseen = the last five, the inductive split of ZegFormer and ZegCLIP (ZegCLIP
# configs/voc12/vpt_seg_zero_vit-b_512x512_20k_12_10.py, `novel_class`): pottedplant, sheep, sofa, train, tvmonitor.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_SPEC = DatasetSpec("voc", VOC_CLASSES, unseen=(15, 16, 17, 18, 19), templates="single")
VOC_LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClassAug/*.png or SegmentationClass/*.png, "
              "ImageSets/Segmentation/{train_aug,train,val}.txt}")


def voc_lookup(num_classes: int) -> np.ndarray:
    """(256,) table for the VOC encoding: raw 0 = background -> ignore, k -> k-1, 255 stays ignore."""
    return lookup_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, num_classes + 1)}},
                        valid=set(range(num_classes + 1)) | {IGNORE_INDEX})


class VOCLayoutDataset(SegmentationDataset):
    """Any dataset stored like VOC directly under `base` (JPEGImages, SegmentationClass[Aug], ImageSets).

    Args:
        base: the folder holding JPEGImages (VOCdevkit/VOC2012 for VOC, the root for the world).
        split: split file name under ImageSets/Segmentation, without ".txt".
        spec: classes and unseen ids; raw labels are 1..C, 0 background, 255 ignore.
        seen_only: relabel unseen pixels to ignore.
        layout: one-line layout description for error messages.
    """

    def __init__(self, base: Path, split: str, spec: DatasetSpec, *, seen_only: bool, layout: str):
        require_dir(base, "dataset root", layout)
        image_dir = require_dir(base / "JPEGImages", "image", layout)
        # SBD-augmented labels (mmseg's voc_aug conversion) cover train_aug and val; prefer them.
        label_dir = base / "SegmentationClassAug"
        if not label_dir.is_dir():
            label_dir = require_dir(base / "SegmentationClass", "label", layout)
        ids = read_split(base / "ImageSets" / "Segmentation" / f"{split}.txt", layout)
        n = spec.num_classes
        super().__init__(spec, split, ids, image_dir, label_dir, voc_lookup(n), seen_only=seen_only,
                         valid_range=f"0..{n} or 255")
        self.root = base


class VOCDataset(VOCLayoutDataset):
    """VOC 2012: train_aug (10,582, SegmentationClassAug) / train (1,464) / val (1,449).

    Args:
        root: VOCdevkit/VOC2012, or a folder above it (VOCdevkit, or the folder containing VOCdevkit).
        split: "train_aug" | "train" | "val" (any split file under ImageSets/Segmentation).
        seen_only: relabel unseen pixels to ignore (the training gate).
    """

    LAYOUT = VOC_LAYOUT
    DEFAULT_SPLITS = ("train_aug", "val")

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False):
        base = find_base(root, ("VOC2012", "VOCdevkit/VOC2012"), marker="JPEGImages")
        super().__init__(base, split, VOC_SPEC, seen_only=seen_only, layout=VOC_LAYOUT)
