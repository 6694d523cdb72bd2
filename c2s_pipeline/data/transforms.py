"""Geometric transforms applied identically to an image and its masks (bilinear image, nearest masks), and
CLIP's pixel normalisation."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD), copied so training never imports open_clip.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> float, CLIP-normalised: what the teacher sees, for the student and world pretraining."""
    x = pixels.float() / 255.0
    mean, std = (torch.tensor(v, device=x.device)[:, None, None] for v in (CLIP_MEAN, CLIP_STD))
    return (x - mean) / std


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, bilinear (PIL), always a new writable array."""
    if image.shape[:2] == (height, width):
        return image.copy()
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) integer mask -> (height, width), nearest (PIL), same dtype, always a new writable array.

    Non-uint8 masks go through PIL's 32-bit mode, which samples the same grid as uint8 masks.
    """
    if mask.shape == (height, width):
        return mask.copy()
    if mask.dtype == np.uint8:
        return np.array(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    as_int32 = mask.astype(np.int32)
    if not np.array_equal(as_int32, mask):
        raise ValueError(f"mask of dtype {mask.dtype} does not fit in int32; masks hold integer ids")
    return np.array(Image.fromarray(as_int32).resize((width, height), Image.NEAREST)).astype(mask.dtype)


def _check_inputs(image: np.ndarray, masks: tuple[np.ndarray, ...]) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    for m in masks:
        if m.shape != image.shape[:2] or not np.issubdtype(m.dtype, np.integer):
            raise ValueError(f"masks must be integer arrays of the image's size {image.shape[:2]}, "
                             f"got {m.shape} {m.dtype}")


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


def view_crop_flip(image: np.ndarray, *masks: np.ndarray, window: tuple[int, int, int], size: int, flip: bool,
                   rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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
    masks = [_resize_mask(np.ascontiguousarray(m[cut]), size, size) for m in masks]
    if flip and rng.random() < 0.5:
        image, masks = image[:, ::-1], [m[:, ::-1] for m in masks]
    return (image.copy(), *(m.copy() for m in masks))
