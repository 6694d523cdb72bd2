"""The generated vision-language world: coloured shapes on textured backgrounds, in the VOC layout.

20 classes = 5 shapes x 4 colours ("red circle", ...). The unseen classes are a parameter
(`world.unseen`, by default one per shape, so every unseen class's shape and colour also occur in seen
classes); the images do not depend on it. Each caption photo for teacher pretraining shows one object and names it,
unseen classes included; segmentation labels come from the drawing masks, never from re-segmenting pixels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from c2s_pipeline.config import Params, WorldConfig
from c2s_pipeline.data.prompts import SINGLE_TEMPLATE

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {"red": (200, 45, 40), "green": (45, 165, 60), "blue": (45, 75, 205), "yellow": (225, 200, 45)}
CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
WORLD_VERSION = 4
CAPTION_DIR = "CaptionImages"
SCENE_OBJECT_RADIUS = (0.11, 0.24)  # circumradius of a scene's objects, a fraction of the side
CAPTIONS_FILE = "captions.jsonl"


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius r centred at (cx, cy), rotated by `angle` radians."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        radii = np.full_like(t, r)
    elif shape == "square":
        t, radii = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, r)
    elif shape == "triangle":
        t, radii = np.arange(3) * 2 * np.pi / 3 - np.pi / 2, np.full(3, r)
    elif shape == "star":
        t, radii = np.arange(10) * np.pi / 5 - np.pi / 2, np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif shape == "cross":
        a = 0.33 * r
        pts = [
            (a, r),
            (-a, r),
            (-a, a),
            (-r, a),
            (-r, -a),
            (-a, -a),
            (-a, -r),
            (a, -r),
            (a, -a),
            (r, -a),
            (r, a),
            (a, a),
        ]
        t = np.array([np.arctan2(y, x) for x, y in pts])
        radii = np.array([np.hypot(x, y) for x, y in pts])
    else:
        raise KeyError(f"unknown shape '{shape}'; choose one of {', '.join(SHAPES)}")
    t = t + angle
    return list(zip(cx + radii * np.cos(t), cy + radii * np.sin(t)))


# Each shape has its own surface pattern, as real classes differ in texture as well as outline (CLIP leans
# on texture). Outline alone is learnt too slowly by a from-scratch ViT within the demo's CPU budget.
PATTERNS = {"circle": "plain", "square": "checked", "triangle": "striped", "star": "dotted", "cross": "speckled"}
# A pattern's period is a fraction of its object's radius: texture scales with the object, as a near or far
# object's does in a photo, so a crop of an object looks alike at every size.
PATTERN_PERIOD = 0.5


def surface(pattern: str, rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    """(size, size) brightness factor of a pattern of `period` px, 0.55 (dark) to 1.0, at a random phase and angle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    theta = rng.uniform(0, np.pi)
    u = np.cos(theta) * xx + np.sin(theta) * yy + rng.uniform(0, 100)
    v = -np.sin(theta) * xx + np.cos(theta) * yy + rng.uniform(0, 100)
    if pattern == "plain":
        return 0.9 + 0.1 * np.sin(u / rng.uniform(6, 12))  # smooth shading only
    if pattern == "striped":
        dark = (u % period) < period / 2
    elif pattern == "checked":
        dark = ((u // (period / 2)) + (v // (period / 2))) % 2 == 0
    elif pattern == "dotted":
        dark = np.hypot(u % period - period / 2, v % period - period / 2) < period / 4
    elif pattern == "speckled":  # random blocks of a quarter period
        cells = rng.random((int(size * 4 / period) + 1,) * 2) < 0.4
        block = (np.arange(size) * 4 / period).astype(int)
        dark = cells[block[:, None], block[None, :]]
    else:
        raise KeyError(f"unknown pattern '{pattern}'; choose one of {', '.join(sorted(set(PATTERNS.values())))}")
    return np.where(dark, 0.55, 1.0)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float: a muted two-tone gradient with noise (never a class colour)."""
    grey = rng.uniform(60, 190, size=2)[:, None] + rng.uniform(-20, 20, size=(2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    ramp = np.cos(theta) * xx + np.sin(theta) * yy
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    img = grey[0] * (1 - ramp[..., None]) + grey[1] * ramp[..., None]
    return img + rng.normal(0, 12, size=img.shape)


def render(
    rng: np.random.Generator,
    size: int,
    classes: list[int],
    radius: tuple[float, float] = SCENE_OBJECT_RADIUS,
    ground=background,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the given classes (later ones on top) on `ground`, circumradius a `radius` fraction of the side.

    Returns image (S, S, 3) uint8 and label (S, S) uint8 (VOC raw: 0 background, class id + 1).
    """
    img = ground(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for cls in classes:
        shape, colour = SHAPES[cls // len(COLOURS)], list(COLOURS.values())[cls % len(COLOURS)]
        r = rng.uniform(*radius) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
        mask_img = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask_img).polygon(shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi)), fill=1)
        mask = np.asarray(mask_img).astype(bool)
        tint = np.array(colour) + rng.uniform(-25, 25, size=3)
        shade = surface(PATTERNS[shape], rng, size, PATTERN_PERIOD * r)
        img[mask] = tint * shade[mask][:, None] + rng.normal(0, 10, size=(mask.sum(), 3))
        label[mask] = cls + 1
    return np.clip(img, 0, 255).astype(np.uint8), label


def _objects(
    rng: np.random.Generator, max_objects: int, classes: tuple[int, ...] | None = None, min_objects: int = 1
) -> list[int]:
    """Distinct class ids of one scene: all 20 classes, or only `classes` (world B)."""
    n = int(rng.integers(min_objects, max_objects + 1))
    if classes is None:
        return [int(c) for c in rng.choice(len(CLASS_NAMES), size=n, replace=False)]
    return [classes[int(k)] for k in rng.choice(len(classes), size=n, replace=False)]


def cloudy_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float: world B's ground, smooth grey blotches (a low-resolution noise field upsampled) with
    a faint tint and noise; never a class colour, and unlike world A's two-tone gradients."""
    cells = rng.uniform(35, 215, size=(5, 5))
    field = np.asarray(Image.fromarray(cells.astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC))
    tint = rng.uniform(-15, 15, size=3)
    return field[..., None] + tint + rng.normal(0, 8, size=(size, size, 3))


# World B: the cross-dataset target of the embedded default (docs/own-data.md). It shows the same kinds of things
# in words the world's teacher knows, under a shift a real second dataset brings: half the vocabulary (the red
# and blue classes: three of world A's default unseen classes, seven of its seen ones), smaller objects, more
# of them per scene, and another kind of ground. It has only a val split (nothing trains on it).
WORLD_B_COLOURS = ("red", "blue")
WORLD_B_CLASSES = tuple(i for i, name in enumerate(CLASS_NAMES) if name.split()[0] in WORLD_B_COLOURS)
WORLD_B_OBJECT_RADIUS = (0.07, 0.16)
WORLD_B_OBJECTS = (2, 6)
WORLD_STYLES = ("a", "b")


# Every caption photo shows one object and names it, as a web photo of a thing does: a caption naming
# several objects asks the text tower to bind each colour to its shape, which it does poorly
# (docs/decisions/0002-world-teacher-one-object-captions.md). Its size spans the scenes' objects
# (SCENE_OBJECT_RADIUS) up to close-ups, as web photos show things at every scale, so that the teacher's CLS
# of a whole scene names what the scene shows (docs/decisions/0007-world-v4-caption-sizes.md).
CAPTION_OBJECT_RADIUS = (SCENE_OBJECT_RADIUS[0], 0.45)


def caption_photo(rng: np.random.Generator, size: int) -> tuple[int, np.ndarray]:
    """The class and the (S, S, 3) uint8 image of one caption photo."""
    cls = int(rng.integers(len(CLASS_NAMES)))
    return cls, render(rng, size, [cls], radius=CAPTION_OBJECT_RADIUS)[0]


def caption_rows(world_dir: str | Path) -> list[dict]:
    """The world's caption photos as written by `generate_world`: image path, caption, classes shown."""
    lines = (Path(world_dir) / CAPTIONS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def caption_for(cls: int) -> str:
    return SINGLE_TEMPLATE[0].format(CLASS_NAMES[cls])


def _write_split(root: Path, split: str, n: int, rng: np.random.Generator, size: int, stats: dict) -> list[str]:
    ids = []
    for k in tqdm(range(n), desc=f"world {split}", unit="img", leave=False):
        id_ = f"{split}_{k:05d}"
        image, label = render(rng, size, _objects(rng, 4))
        Image.fromarray(image).save(root / "JPEGImages" / f"{id_}.jpg", quality=95)
        Image.fromarray(label, mode="L").save(root / "SegmentationClass" / f"{id_}.png")
        present, counts = np.unique(label[label > 0], return_counts=True)
        for c, px in zip(present - 1, counts):
            stats[split][CLASS_NAMES[c]] = stats[split].get(CLASS_NAMES[c], 0) + int(px)
        ids.append(id_)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


def _write_world_b(root: Path, n: int, rng: np.random.Generator, size: int, stats: dict) -> list[str]:
    """World B's val split; its labels number its own classes (WORLD_B_CLASSES order) from 1."""
    relabel = np.zeros(len(CLASS_NAMES) + 1, np.uint8)
    relabel[[c + 1 for c in WORLD_B_CLASSES]] = np.arange(1, len(WORLD_B_CLASSES) + 1)
    ids = []
    for k in tqdm(range(n), desc="world B val", unit="img", leave=False):
        id_ = f"val_{k:05d}"
        image, label = render(
            rng,
            size,
            _objects(rng, WORLD_B_OBJECTS[1], WORLD_B_CLASSES, WORLD_B_OBJECTS[0]),
            radius=WORLD_B_OBJECT_RADIUS,
            ground=cloudy_background,
        )
        Image.fromarray(image).save(root / "JPEGImages" / f"{id_}.jpg", quality=95)
        Image.fromarray(relabel[label], mode="L").save(root / "SegmentationClass" / f"{id_}.png")
        present, counts = np.unique(label[label > 0], return_counts=True)
        for c, px in zip(present - 1, counts):
            stats["val"][CLASS_NAMES[c]] = stats["val"].get(CLASS_NAMES[c], 0) + int(px)
        ids.append(id_)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return ids


def generate_world_b(out_dir: str | Path, cfg: WorldConfig) -> dict:
    """Write world B (val split only, `cfg.n_val` images) under out_dir; deterministic from cfg.seed, drawn from
    another random stream than world A's, so no scene of A recurs."""
    root = Path(out_dir)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, int]] = {"val": {}}
    _write_world_b(root, cfg.n_val, np.random.default_rng([cfg.seed, 1]), cfg.image_size, stats)
    meta = {
        "class_names": [CLASS_NAMES[c] for c in WORLD_B_CLASSES],
        "seed": cfg.seed,
        "style": "b",
        "image_size": cfg.image_size,
        "n_val": cfg.n_val,
        "version": WORLD_VERSION,
        "pixels_per_class": stats,
    }
    (root / "world.json").write_text(json.dumps(meta, indent=1))
    log.info("world B: %d val images of %d classes", cfg.n_val, len(WORLD_B_CLASSES))
    return meta


def generate_world(out_dir: str | Path, cfg: WorldConfig) -> dict:
    """Write the world under out_dir; deterministic from cfg.seed. Returns a summary."""
    root = Path(out_dir)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", CAPTION_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    stats: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    _write_split(root, "train", cfg.n_train, rng, cfg.image_size, stats)
    _write_split(root, "val", cfg.n_val, rng, cfg.image_size, stats)
    with (root / CAPTIONS_FILE).open("w") as f:
        for k in tqdm(range(cfg.n_caption), desc="world captions", unit="img", leave=False):
            cls, image = caption_photo(rng, cfg.image_size)
            rel = f"{CAPTION_DIR}/cap_{k:05d}.jpg"
            Image.fromarray(image).save(root / rel, quality=95)
            f.write(json.dumps({"image": rel, "caption": caption_for(cls), "classes": [cls]}) + "\n")
    meta = {
        "class_names": list(CLASS_NAMES),
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "n_train": cfg.n_train,
        "n_val": cfg.n_val,
        "n_caption": cfg.n_caption,
        "version": WORLD_VERSION,
        "pixels_per_class": stats,
    }
    (root / "world.json").write_text(json.dumps(meta, indent=1))
    log.info("world: %d train, %d val, %d captions", cfg.n_train, cfg.n_val, cfg.n_caption)
    return meta


class WorldError(ValueError):
    """A world that cannot be generated as asked; what to do."""


def run_generate(params: Params, out_dir: str | Path, style: str = "a") -> Path:
    """Write the generated world in the VOC layout under `out_dir`: world A (the embedded default) or world B
    (its cross-dataset target)."""
    if style not in WORLD_STYLES:
        raise WorldError(f"unknown world style {style!r}; choose one of {', '.join(WORLD_STYLES)}")
    summary = (generate_world if style == "a" else generate_world_b)(Path(out_dir), params.world)
    log.info("world written to %s: %s", out_dir, {k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return Path(out_dir)
