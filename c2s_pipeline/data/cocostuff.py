"""COCO-Stuff 164k in mmsegmentation's layout (`*_labelTrainIds.png`, 171 classes, 255 ignore)."""

from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import IGNORE_INDEX, DatasetSpec
from c2s_pipeline.data.reader import SegmentationDataset, images_and_annotations, label_ids, lookup_table

# mmseg COCOStuffDataset.METAINFO['classes'] (mmseg/datasets/coco_stuff.py; = mmseg/utils/class_names.py
# cocostuff_classes): the 171 trainIds written by tools/dataset_converters/coco_stuff164k.py.
COCOSTUFF_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)
# ZegFormer / ZegCLIP inductive split (ZegCLIP configs/coco/vpt_seg_zero_vit-b_512x512_80k_12_100_multi.py,
# `novel_class`): cow, giraffe,
# suitcase, frisbee, skateboard, carrot, scissors, cardboard, clouds, grass, playingfield, river, road, tree,
# wall-concrete (tests/test_data.py checks these names).
COCOSTUFF_UNSEEN = (19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160)
COCOSTUFF_SPEC = DatasetSpec("cocostuff", COCOSTUFF_CLASSES, COCOSTUFF_UNSEEN, templates="ensemble")
COCO_LAYOUT = (
    "coco_stuff164k/{images/{train2017,val2017}/*.jpg, annotations/{train2017,val2017}/"
    "*_labelTrainIds.png} (mmseg tools/dataset_converters/coco_stuff164k.py)"
)
COCO_SPLITS = {"train": "train2017", "val": "val2017"}
LABEL_SUFFIX = "_labelTrainIds.png"


class CocoStuffDataset(SegmentationDataset):
    """COCO-Stuff 164k: train 118,287 / val 5,000; labels are trainIds 0..170 already (255 ignore).

    The id list of a split is the sorted label files of its annotation folder.

    Args:
        root: coco_stuff164k, or the folder containing it.
        split: "train" | "val" (or "train2017" | "val2017").
        seen_only: relabel unseen pixels to ignore (the training gate).
    """

    LAYOUT = COCO_LAYOUT
    DEFAULT_SPLITS = ("train", "val")
    MISSING_IMAGE_FIX = "restore it, or remove its label file (a split's ids are its annotation files)"

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False):
        base, image_dir, label_dir = images_and_annotations(
            root, split, COCO_SPLITS, "coco_stuff164k", COCO_LAYOUT, "COCO-Stuff"
        )
        ids = label_ids(
            label_dir,
            LABEL_SUFFIX,
            "convert the annotations with mmsegmentation's tools/dataset_converters/coco_stuff164k.py",
        )
        lut = lookup_table({k: k for k in range(171)}, valid=set(range(171)) | {IGNORE_INDEX})
        super().__init__(
            COCOSTUFF_SPEC,
            split,
            ids,
            image_dir,
            label_dir,
            lut,
            label_suffix=LABEL_SUFFIX,
            seen_only=seen_only,
            valid_range="0..170 or 255",
        )
        self.root = base
