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
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_SPEC = DatasetSpec("voc", VOC_CLASSES, unseen=(15, 16, 17, 18, 19), templates="single")
VOC_LAYOUT = (
    "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClassAug/*.png and/or SegmentationClass/*.png, "
    "ImageSets/Segmentation/{train_aug or trainaug,train,val}.txt}"
)
# The two common SBD-augmented layouts name the augmented train list differently: the DeepLab
# SegmentationClassAug zip has train_aug.txt, mmsegmentation's voc_aug converter trainaug.txt (+ aug.txt).
SPLIT_ALIASES = {"train_aug": "trainaug", "trainaug": "train_aug"}
AUG_SPLITS = ("train_aug", "trainaug", "aug")


def voc_lookup(num_classes: int) -> np.ndarray:
    """(256,) table for the VOC encoding: raw 0 = background -> ignore, k -> k-1, 255 stays ignore."""
    return lookup_table(
        {0: IGNORE_INDEX, **{k: k - 1 for k in range(1, num_classes + 1)}},
        valid=set(range(num_classes + 1)) | {IGNORE_INDEX},
    )


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
        # Each id's label comes from the first folder that has it: the official SegmentationClass masks
        # (what VOC val is scored on) unless the split is an augmented train list, whose SBD masks live in
        # SegmentationClassAug (the DeepLab zip holds every id there; mmseg's converter only the SBD ones).
        order = ("SegmentationClass", "SegmentationClassAug")
        order = order[::-1] if split in AUG_SPLITS else order
        self.label_dirs = [base / name for name in order if (base / name).is_dir()]
        if not self.label_dirs:
            require_dir(base / "SegmentationClass", "label", layout)
        split_dir = base / "ImageSets" / "Segmentation"
        if not (split_dir / f"{split}.txt").is_file() and (split_dir / f"{SPLIT_ALIASES.get(split)}.txt").is_file():
            split = SPLIT_ALIASES[split]
        ids = read_split(split_dir / f"{split}.txt", layout)
        n = spec.num_classes
        super().__init__(
            spec,
            split,
            ids,
            image_dir,
            self.label_dirs[0],
            voc_lookup(n),
            seen_only=seen_only,
            valid_range=f"0..{n} or 255",
        )
        self.root = base

    def label_path(self, i: int) -> Path:
        name = f"{self.ids[i]}{self.label_suffix}"
        for folder in self.label_dirs:
            if (folder / name).is_file():
                return folder / name
        return self.label_dirs[0] / name


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
