"""PASCAL VOC 2012 (+ SBD aug) in the standard VOCdevkit layout; also the generated world's layout."""
from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, lookup_table, read_split, require_dir

# Class names as the dataset spells them; unseen = the last five (ZegCLIP configs/_base_/datasets/
# dropped_aug_pascal_voc12.py and ZegFormer: pottedplant, sheep, sofa, train, tvmonitor).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_SPEC = DatasetSpec("voc", VOC_CLASSES, unseen=(15, 16, 17, 18, 19), templates="single")
VOC_LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages, SegmentationClassAug or SegmentationClass, "
              "ImageSets/Segmentation/<split>.txt}")


def voc_layout_dataset(root: Path, split: str, spec: DatasetSpec, *, seen_only: bool,
                       layout: str = VOC_LAYOUT) -> SegmentationDataset:
    """Any dataset stored like VOC: raw 0 = background -> ignore, k -> k-1, 255 stays ignore."""
    require_dir(root, "dataset root", layout)
    image_dir = require_dir(root / "JPEGImages", "image", layout)
    label_dir = root / "SegmentationClassAug"
    if not label_dir.is_dir():
        label_dir = require_dir(root / "SegmentationClass", "label", layout)
    ids = read_split(root / "ImageSets" / "Segmentation" / f"{split}.txt", layout)
    n = spec.num_classes
    lut = lookup_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, n + 1)}},
                       valid=set(range(n + 1)) | {IGNORE_INDEX})
    return SegmentationDataset(spec, split, ids, image_dir, label_dir, lut, seen_only=seen_only,
                               valid_range=f"0..{n} or 255")


def voc_root(root: str | Path) -> Path:
    """Accept VOCdevkit/VOC2012 itself or any folder above it."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def build_voc(root: str | Path, split: str, *, seen_only: bool = False, **_) -> SegmentationDataset:
    """VOC: train_aug (10,582, SegmentationClassAug) / val (1,449)."""
    return voc_layout_dataset(voc_root(root), split, VOC_SPEC, seen_only=seen_only)
