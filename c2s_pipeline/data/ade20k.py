"""ADE20K-150 (SceneParsing) in mmsegmentation's layout: 150 classes, mask value 0 unlabelled (reduce_zero_label)."""

from __future__ import annotations

from pathlib import Path

from c2s_pipeline.data.base import DatasetError, DatasetSpec
from c2s_pipeline.data.folder import folder_lut
from c2s_pipeline.data.reader import SegmentationDataset, images_and_annotations, label_ids

# mmseg ADE20KDataset.METAINFO['classes'] (mmseg/datasets/ade.py): class k is mask value k + 1.
ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
ADE20K_LAYOUT = (
    "ADEChallengeData2016/{images,annotations}/{training,validation}/<id>.{jpg,png} "
    "(mmseg tools/dataset_converters: the SceneParsing release as is)"
)
ADE20K_SPLITS = {"train": "training", "val": "validation"}


def ade20k_spec(unseen: tuple[str, ...] = ()) -> DatasetSpec:
    """ADE20K-150; the literature has no zero-shot split of it (it is a cross-dataset target), so the unseen
    classes are `data.unseen`, by name, as for a folder of your own."""
    unknown = [u for u in unseen if u not in ADE20K_CLASSES]
    if unknown:
        raise DatasetError(f"data.unseen names {', '.join(unknown)}, not ADE20K-150 classes")
    return DatasetSpec(
        "ade20k", ADE20K_CLASSES, tuple(sorted(ADE20K_CLASSES.index(u) for u in set(unseen))), templates="ensemble"
    )


class ADE20KDataset(SegmentationDataset):
    """ADE20K-150: train 20,210 / val 2,000; a split's ids are its annotation files.

    Args:
        root: ADEChallengeData2016, or the folder containing it.
        split: "train" | "val" (or "training" | "validation").
        seen_only: relabel unseen pixels to ignore (the training gate).
        unseen: names of the unseen classes (`data.unseen`).
    """

    LAYOUT = ADE20K_LAYOUT
    DEFAULT_SPLITS = ("train", "val")
    MISSING_IMAGE_FIX = "restore it, or remove its annotation (a split's ids are its annotation files)"

    def __init__(self, root: str | Path, split: str, *, seen_only: bool = False, unseen: tuple[str, ...] = ()):
        base, image_dir, label_dir = images_and_annotations(
            root, split, ADE20K_SPLITS, "ADEChallengeData2016", ADE20K_LAYOUT, "ADE20K"
        )
        ids = label_ids(label_dir, ".png", f"expected layout: {ADE20K_LAYOUT}")
        lut, valid_range = folder_lut({"classes": ADE20K_CLASSES, "reduce_zero_label": True, "ignore_index": 255})
        super().__init__(
            ade20k_spec(unseen), split, ids, image_dir, label_dir, lut, seen_only=seen_only, valid_range=valid_range
        )
        self.root = base
