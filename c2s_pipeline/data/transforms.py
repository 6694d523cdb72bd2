"""Geometric transforms applied identically to an image and its masks (nearest for masks)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from c2s_pipeline.data.base import IGNORE_INDEX


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize to (width, height); bilinear for images, nearest for masks."""
    if array.shape[1] == size[0] and array.shape[0] == size[1]:
        return array
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize(size, resample))


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) image and (H, W) label -> size x size each (the teacher's and student's view)."""
    return _resize(image, (size, size), nearest=False), _resize(label, (size, size), nearest=True)


def random_scale_crop_flip(image: np.ndarray, *masks: np.ndarray, size: int,
                           scale_range: tuple[float, float], flip: bool,
                           rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random rescale of the size x size inputs, random size x size crop (padded), random h-flip.

    Image padding is 0 and mask padding IGNORE_INDEX, so padded pixels never enter a loss.
    """
    side = max(1, int(round(size * rng.uniform(*scale_range))))
    image = _resize(image, (side, side), nearest=False)
    masks = [_resize(m, (side, side), nearest=True) for m in masks]
    if side < size:
        pad = size - side
        image = np.pad(image, ((0, pad), (0, pad), (0, 0)))
        masks = [np.pad(m, ((0, pad), (0, pad)), constant_values=IGNORE_INDEX) for m in masks]
        side = size
    y, x = rng.integers(0, side - size + 1, size=2)
    image = image[y:y + size, x:x + size]
    masks = [m[y:y + size, x:x + size] for m in masks]
    if flip and rng.random() < 0.5:
        image, masks = image[:, ::-1], [m[:, ::-1] for m in masks]
    return (np.ascontiguousarray(image), *(np.ascontiguousarray(m) for m in masks))
