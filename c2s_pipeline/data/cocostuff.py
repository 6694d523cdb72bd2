"""COCO-Stuff 164k in mmsegmentation's layout (`*_labelTrainIds.png`, 171 classes, 255 ignore)."""
from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetError, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, lookup_table, require_dir

# mmseg COCOStuffDataset.METAINFO['classes'] (the 171 trainIds of cocostuff164k).
COCOSTUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
    "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
# ZegCLIP / ZegFormer inductive split (15 unseen).
COCOSTUFF_UNSEEN = (19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160)
COCOSTUFF_SPEC = DatasetSpec("cocostuff", COCOSTUFF_CLASSES, COCOSTUFF_UNSEEN, templates="ensemble")
COCO_LAYOUT = "coco_stuff164k/{images,annotations}/{train2017,val2017}/ (*.jpg, *_labelTrainIds.png)"
_SPLITS = {"train": "train2017", "val": "val2017"}


def build_cocostuff(root: str | Path, split: str, *, seen_only: bool = False, **_) -> SegmentationDataset:
    """118k train / 5k val; the file list is the sorted label files of the split."""
    if split not in _SPLITS:
        raise DatasetError(f"unknown COCO-Stuff split '{split}'; choose one of {', '.join(_SPLITS)}")
    root = Path(root)
    require_dir(root, "dataset root", COCO_LAYOUT)
    image_dir = require_dir(root / "images" / _SPLITS[split], "image", COCO_LAYOUT)
    label_dir = require_dir(root / "annotations" / _SPLITS[split], "label", COCO_LAYOUT)
    suffix = "_labelTrainIds.png"
    ids = sorted(p.name[: -len(suffix)] for p in label_dir.glob(f"*{suffix}"))
    if not ids:
        raise DatasetError(f"no *{suffix} files in {label_dir}; convert the annotations with "
                           "mmsegmentation's tools/dataset_converters/coco_stuff164k.py")
    lut = lookup_table({k: k for k in range(171)}, valid=set(range(171)) | {IGNORE_INDEX})
    return SegmentationDataset(COCOSTUFF_SPEC, split, ids, image_dir, label_dir, lut,
                               label_suffix=suffix, seen_only=seen_only, valid_range="0..170 or 255")
