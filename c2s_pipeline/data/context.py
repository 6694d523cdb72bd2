"""PASCAL Context 59 in mmsegmentation's layout (reduce_zero_label), with a choice of unseen split."""
from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, lookup_table, read_split, require_dir

# mmseg PascalContextDataset59.METAINFO['classes'].
CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
    "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
# A: ZS3Net / MaskCLIP+ / OTSeg; B: Cascade-CLIP (see shared REFERENCE.md).
CONTEXT_UNSEEN = {
    "A": (0, 6, 7, 14, 19, 24, 31, 33, 48, 54),
    "B": (0, 2, 3, 7, 9, 13, 17, 19, 31, 37),
}
CONTEXT_LAYOUT = ("VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext, "
                  "ImageSets/SegmentationContext/{train,val}.txt}")


def context_spec(unseen_split: str = "A") -> DatasetSpec:
    if unseen_split not in CONTEXT_UNSEEN:
        raise DatasetError(f"unknown PASCAL Context unseen split '{unseen_split}'; choose one of "
                           f"{', '.join(CONTEXT_UNSEEN)}")
    return DatasetSpec("context", CONTEXT_CLASSES, CONTEXT_UNSEEN[unseen_split], templates="ensemble")


def build_context(root: str | Path, split: str, *, seen_only: bool = False,
                  context_unseen_split: str = "A", **_) -> SegmentationDataset:
    """4,996 train / 5,104 val; raw 0 = background -> ignore, k -> k-1."""
    root = Path(root)
    for candidate in (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010"):
        if (candidate / "SegmentationClassContext").is_dir():
            root = candidate
            break
    require_dir(root, "dataset root", CONTEXT_LAYOUT)
    image_dir = require_dir(root / "JPEGImages", "image", CONTEXT_LAYOUT)
    label_dir = require_dir(root / "SegmentationClassContext", "label", CONTEXT_LAYOUT)
    ids = read_split(root / "ImageSets" / "SegmentationContext" / f"{split}.txt", CONTEXT_LAYOUT)
    lut = lookup_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, 60)}},
                       valid=set(range(60)) | {IGNORE_INDEX})
    return SegmentationDataset(context_spec(context_unseen_split), split, ids, image_dir, label_dir,
                               lut, seen_only=seen_only, valid_range="0..59 or 255")
