"""Geometric transforms applied identically to an image and its masks (bilinear image, nearest masks), the
view bank's crops (MMSeg's training geometry), photometric distortion, and the pixel normalisations."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image

# CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD), copied so training never imports open_clip.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's, which smp / timm ImageNet encoders expect (smp.encoders.get_preprocessing_params; tests check it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALISATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


def normalise(pixels: torch.Tensor, kind: str = "clip") -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float, normalised with `kind`'s mean and std (student.normalisation)."""
    if kind not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation '{kind}'; choose {' or '.join(NORMALISATIONS)}")
    x = pixels.float() / 255.0
    mean, std = (torch.tensor(v, device=x.device)[:, None, None] for v in NORMALISATIONS[kind])
    return (x - mean) / std


def clip_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float, CLIP-normalised: what the teacher sees, for world pretraining."""
    return normalise(pixels, "clip")


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, bilinear (PIL), always a new writable array."""
    if image.shape[:2] == (height, width):
        return image.copy()
    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) integer mask -> (height, width), nearest (PIL), same dtype, always a new writable array.

    Non-uint8 masks go through PIL's 32-bit mode, which samples the same grid as uint8 masks.
    """
    if mask.shape == (height, width):
        return mask.copy()
    if mask.dtype == np.uint8:
        return np.array(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    as_int32 = mask.astype(np.int32)
    if not np.array_equal(as_int32, mask):
        raise ValueError(f"mask of dtype {mask.dtype} does not fit in int32; masks hold integer ids")
    return np.array(Image.fromarray(as_int32).resize((width, height), Image.Resampling.NEAREST)).astype(mask.dtype)


def _check_inputs(image: np.ndarray, masks: tuple[np.ndarray, ...]) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    for m in masks:
        if m.shape != image.shape[:2] or not np.issubdtype(m.dtype, np.integer):
            raise ValueError(
                f"masks must be integer arrays of the image's size {image.shape[:2]}, got {m.shape} {m.dtype}"
            )


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to exactly size x size (the teacher's and the student's view; aspect ratio not kept).

    Args:
        image: (H, W, 3) uint8 RGB, resized bilinearly.
        label: (H, W) integer mask, resized nearest.
        size: output side.

    Returns:
        image (size, size, 3) uint8 and label (size, size) of label's dtype, both new arrays.
    """
    _check_inputs(image, (label,))
    return _resize_image(image, size, size), _resize_mask(label, size, size)


def view_windows(size: int, crop_fractions: tuple[float, ...]) -> list[tuple[int, int, int]]:
    """The fixed views whose teacher outputs are stored, as (top, left, side) pixel windows of the S x S image.

    View 0 is the whole image; each fraction f < 1 adds the four corner crops of side round(f * size).
    Teacher and student cut the same windows, so the global CLS belongs to exactly the pixels shown.
    """
    views = [(0, 0, size)]
    for f in crop_fractions:
        if not 0 < f < 1:
            raise ValueError(f"view crop fractions must lie in (0, 1), got {f}")
        side = max(1, round(f * size))
        far = size - side
        views += [(0, 0, side), (0, far, side), (far, 0, side), (far, far, side)]
    return views


def view_crop_flip(
    image: np.ndarray, *masks: np.ndarray, window: tuple[int, int, int], size: int, flip: bool, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Cut one stored view out of an image and its masks, resize to size x size, maybe flip horizontally.

    Args:
        image: (H, W, 3) uint8 RGB (bilinear).
        *masks: (H, W) integer masks (nearest), e.g. label and pseudo mask.
        window: (top, left, side) in pixels of the image, from `view_windows`.
        size: output side.
        flip: allow the random horizontal flip (CLIP's global CLS is taken as flip-invariant).
        rng: the only source of randomness.

    Returns:
        (image (size, size, 3) uint8, *masks (size, size) of their dtypes), new writable arrays.
    """
    _check_inputs(image, masks)
    top, left, side = window
    if top < 0 or left < 0 or top + side > image.shape[0] or left + side > image.shape[1]:
        raise ValueError(f"view window {window} does not fit an image of size {image.shape[:2]}")
    cut = (slice(top, top + side), slice(left, left + side))
    image = _resize_image(np.ascontiguousarray(image[cut]), size, size)
    cut_masks = [_resize_mask(np.ascontiguousarray(m[cut]), size, size) for m in masks]
    if flip and rng.random() < 0.5:
        image, cut_masks = image[:, ::-1], [m[:, ::-1] for m in cut_masks]
    return (image.copy(), *(m.copy() for m in cut_masks))


# A view of the bank: the image resized to (height, width) keeping its ratio, then the window (top, left,
# crop_h, crop_w) of it, padded at the bottom and right to S x S (MMSeg's Resize, RandomCrop, Pad).
BOX_FIELDS = ("height", "width", "top", "left", "crop_h", "crop_w")


def keep_ratio_size(height: int, width: int, long: float, short: float) -> tuple[int, int]:
    """The size of an image rescaled as large as fits within long x short, ratio kept (mmcv's imrescale)."""
    long, short = max(long, short), min(long, short)
    factor = min(long / max(height, width), short / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def image_seed(image_id: str) -> int:
    """A stable integer of an image id: the bank's draws depend on the id, not on the order of the list."""
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")


def draw_bank_views(
    label: np.ndarray,
    image_id: str,
    *,
    count: int,
    crop: int,
    scale: tuple[int, int],
    ratio: tuple[float, float],
    cat_max_ratio: float,
    ignore_index: int = 255,
) -> np.ndarray:
    """`count` training crops of one image, drawn as MMSeg's pipeline draws them, as (count, 6) BOX_FIELDS rows.

    View k is seeded by (image id, k) alone, so a store is reproducible and resumable in any order. Resize:
    a ratio r uniform in `ratio`, the image rescaled to fit (r long, r short) with its ratio kept. Crop: a
    crop x crop window at a uniform offset (smaller where the image is), redrawn up to 10 times while one
    class covers more than `cat_max_ratio` of its labelled pixels (MMSeg's RandomCrop: after 10 refusals an
    11th draw is taken unchecked).

    Args:
        label: (H, W) seen-only label (unseen pixels already ignore_index): the bank never reads unseen labels.
    """
    h, w = label.shape
    seed, boxes = image_seed(image_id), []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        r = rng.uniform(*ratio)
        rh, rw = keep_ratio_size(h, w, int(scale[0] * r), int(scale[1] * r))  # MMSeg truncates the scale
        resized = _resize_mask(label, rh, rw) if cat_max_ratio < 1 else None
        ch, cw = min(crop, rh), min(crop, rw)
        window = lambda: (int(rng.integers(max(rh - crop, 0) + 1)), int(rng.integers(max(rw - crop, 0) + 1)))  # noqa: E731, B023
        top, left = window()
        for _ in range(10 if resized is not None else 0):
            assert resized is not None  # the loop runs only with a resized mask
            ids, counts = np.unique(resized[top : top + ch, left : left + cw], return_counts=True)
            counts = counts[ids != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = window()
        boxes.append((rh, rw, top, left, ch, cw))
    return np.asarray(boxes, dtype=np.int32)


def bank_view(image: np.ndarray, *masks: np.ndarray, box) -> tuple[np.ndarray, ...]:
    """Cut one bank view out of an image and its masks: resize to the box's size (ratio kept), take its window.

    Masks of another size than the image (a stored S x S pseudo mask) are resized to the same box, so they
    land on the same pixels. Returns the window, not padded (`pad_to` pads), as new writable arrays.
    """
    rh, rw, top, left, ch, cw = (int(v) for v in box)
    cut = (slice(top, top + ch), slice(left, left + cw))
    out = [_resize_image(image, rh, rw)[cut]] + [_resize_mask(m, rh, rw)[cut] for m in masks]
    return tuple(np.ascontiguousarray(a) for a in out)


def pad_to(array: np.ndarray, size: int, fill) -> np.ndarray:
    """Pad (h, w[, c]) at the bottom and right to (size, size[, c]) with `fill` (MMSeg's Pad)."""
    h, w = array.shape[:2]
    if h > size or w > size:
        raise ValueError(f"a view of {h} x {w} does not fit in {size} x {size}")
    out = np.full((size, size, *array.shape[2:]), fill, dtype=array.dtype)
    out[:h, :w] = array
    return out


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MMSeg's PhotoMetricDistortion on (H, W, 3) uint8: brightness +-32, contrast x[0.5, 1.5] (before or after
    the HSV steps), saturation x[0.5, 1.5], hue in [-18, 17] (OpenCV's 0-180 scale); each with probability 0.5,
    each truncated back to uint8 as MMSeg's `convert` does. HSV is PIL's (hue on 0-255) rather than OpenCV's."""

    def convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.random() < 0.5:
        image = convert(image, beta=rng.uniform(-32, 32))
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    saturate, shift = rng.random() < 0.5, rng.random() < 0.5
    if saturate or shift:
        hsv = np.asarray(Image.fromarray(image).convert("HSV"))
        if saturate:
            hsv = np.concatenate([hsv[..., :1], convert(hsv[..., 1:2], alpha=rng.uniform(0.5, 1.5)), hsv[..., 2:]], -1)
        if shift:  # PIL's hue spans 0-255 for OpenCV's 0-180
            hue = (hsv[..., 0].astype(np.int32) + round(int(rng.integers(-18, 18)) * 256 / 180)) % 256
            hsv = np.concatenate([hue[..., None].astype(np.uint8), hsv[..., 1:]], -1)
        image = np.asarray(Image.fromarray(np.ascontiguousarray(hsv), "HSV").convert("RGB"))
    if not contrast_first and rng.random() < 0.5:
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    return np.array(image)
