"""Tiny on-disk datasets in each real layout, written by tests (a few generated images and PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _write_pair(image_path: Path, label_path: Path, raw: np.ndarray, rng: np.random.Generator) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    # Image colour encodes the raw label so alignment can be checked after transforms.
    red = (raw.astype(np.int32) * 12) % 256  # 12 grey levels per class survive JPEG noise
    image = np.stack([red, 255 - red, np.full_like(red, 128)], -1).astype(np.uint8)
    Image.fromarray(image).save(image_path, quality=98)
    Image.fromarray(raw.astype(np.uint8), mode="L").save(label_path)


def _raw_label(rng: np.random.Generator, values: list[int], shape=(48, 64)) -> np.ndarray:
    """Four quadrants of the given raw values (blocks survive JPEG and resizing)."""
    raw = np.zeros(shape, dtype=np.uint8)
    h, w = shape
    for k, (ys, xs) in enumerate(
        [
            (slice(0, h // 2), slice(0, w // 2)),
            (slice(0, h // 2), slice(w // 2, w)),
            (slice(h // 2, h), slice(0, w // 2)),
            (slice(h // 2, h), slice(w // 2, w)),
        ]
    ):
        raw[ys, xs] = values[k % len(values)]
    return raw


def make_voc(root: Path, raws: dict[str, list[list[int]]], aug: bool = True) -> Path:
    """VOCdevkit/VOC2012 with one split file per key of `raws` (split -> list of quadrant values)."""
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    label_dir = base / ("SegmentationClassAug" if aug else "SegmentationClass")
    for split, images in raws.items():
        ids = [f"{split}_{i:04d}" for i in range(len(images))]
        for id_, values in zip(ids, images):
            _write_pair(base / "JPEGImages" / f"{id_}.jpg", label_dir / f"{id_}.png", _raw_label(rng, values), rng)
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def make_context(root: Path, images: list[list[int]]) -> Path:
    base = root / "VOCdevkit" / "VOC2010"
    rng = np.random.default_rng(1)
    ids = [f"2008_{i:06d}" for i in range(len(images))]
    for id_, values in zip(ids, images):
        _write_pair(
            base / "JPEGImages" / f"{id_}.jpg",
            base / "SegmentationClassContext" / f"{id_}.png",
            _raw_label(rng, values),
            rng,
        )
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (base / "ImageSets" / "SegmentationContext" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def make_cocostuff(root: Path, images: list[list[int]], split: str = "val2017") -> Path:
    rng = np.random.default_rng(2)
    for i, values in enumerate(images):
        id_ = f"{i:012d}"
        _write_pair(
            root / "images" / split / f"{id_}.jpg",
            root / "annotations" / split / f"{id_}_labelTrainIds.png",
            _raw_label(rng, values),
            rng,
        )
    return root


def make_ade20k(root: Path, images: list[list[int]], split: str = "validation") -> Path:
    """ADEChallengeData2016/{images,annotations}/<split>/ADE_<split>_0000000k.{jpg,png}; raw 0 is unlabelled."""
    base = root / "ADEChallengeData2016"
    rng = np.random.default_rng(2)
    for k, values in enumerate(images):
        name = f"ADE_{split[:5]}_{k + 1:08d}"
        _write_pair(
            base / "images" / split / f"{name}.jpg",
            base / "annotations" / split / f"{name}.png",
            _raw_label(rng, values),
            rng,
        )
    return base


def make_world_meta(root: Path, class_names: list[str]) -> None:
    (root / "world.json").write_text(json.dumps({"class_names": class_names}))
