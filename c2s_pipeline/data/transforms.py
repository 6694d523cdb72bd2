"""Geometric transforms applied identically to an image and its masks (bilinear image, nearest masks)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from c2s_pipeline.data.base import IGNORE_INDEX


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


def _pad_to(image: np.ndarray, masks: list[np.ndarray], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pad bottom/right to at least size x size: image with 0, masks with IGNORE_INDEX."""
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image, masks
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    masks = [np.pad(m, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX) for m in masks]
    return image, masks


def random_scale_crop_flip(image: np.ndarray, *masks: np.ndarray, size: int,
                           scale_range: tuple[float, float], flip: bool,
                           rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One random geometry applied to an image and any number of masks.

    Steps: rescale so the long side is `size * s`, s ~ U(scale_range) (for the usual size x size
    input: a (size*s) x (size*s) image); pad to size x size if smaller (image 0, masks IGNORE_INDEX,
    so padding never enters a loss); random size x size crop; horizontal flip with probability 0.5
    when `flip`.

    Args:
        image: (H, W, 3) uint8 RGB (bilinear).
        *masks: (H, W) integer masks (nearest), e.g. label and pseudo mask.
        size: output side.
        scale_range: (low, high) scale factors, 0 < low <= high.
        flip: allow the random horizontal flip.
        rng: the only source of randomness (a seeded Generator makes the geometry reproducible).

    Returns:
        (image (size, size, 3) uint8, *masks (size, size) of their dtypes), new writable arrays.
    """
    _check_inputs(image, masks)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    h, w = image.shape[:2]
    factor = rng.uniform(low, high) * size / max(h, w)
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    image = _resize_image(image, new_h, new_w)
    resized = [_resize_mask(m, new_h, new_w) for m in masks]
    image, resized = _pad_to(image, resized, size)
    y = int(rng.integers(0, image.shape[0] - size + 1))
    x = int(rng.integers(0, image.shape[1] - size + 1))
    window = (slice(y, y + size), slice(x, x + size))
    image, resized = image[window], [m[window] for m in resized]
    if flip and rng.random() < 0.5:
        image, resized = image[:, ::-1], [m[:, ::-1] for m in resized]
    return (image.copy(), *(m.copy() for m in resized))
