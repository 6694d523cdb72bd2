"""Names, shapes and dtypes of the teacher cache, defined once for every backend.

Per-image arrays have the image index as their first axis and one image per chunk, so each
image is one independent write. `done` is written last for an image, so a reader never sees
half an image and a killed precompute resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c2s_pipeline.data.base import IGNORE_INDEX

SCHEMA_VERSION = 3  # 3: dense tokens optional per store (teacher.dense_tokens)
# Schemas this code reads: a schema-2 store is a schema-3 store that keeps its dense tokens, so students
# trained on one still evaluate (their run names that store).
READABLE_SCHEMAS = (2, 3)

# Per-image arrays (first axis = image index). Shapes use N images, V views, D embedding width,
# h x w teacher token grid, S x S pseudo-mask side, R region slots.
GLOBAL_CLS = "global_cls"  # (N, V, D) float16   C_g of each stored view, L2-normalised
VIEW_BOXES = "view_boxes"  # (N, V, 6) int32   a bank view's box (data.transforms.BOX_FIELDS); bank only
DENSE_TOKENS = "dense_tokens"  # (N, h, w, D) float16   C_d, L2-normalised per token; absent unless stored
PSEUDO_MASK = "pseudo_mask"  # (N, S, S) uint8   region slot id per pixel, NO_REGION elsewhere
REGION_CLASS = "region_class"  # (N, R) int16   class id of each slot; LATENT or EMPTY_SLOT
LOCAL_CLS = "local_cls"  # (N, R, D) float16   C_l per region slot, L2-normalised
REGION_COUNT = "region_count"  # (N,) uint8   number of used slots (slots 0..count-1)
DONE = "done"  # (N,) bool   written last, per image

# Vocabulary arrays (whole dataset, written once).
TEXT_EMBEDDINGS = "text_embeddings"  # (C, D) float32   A, L2-normalised
CLASS_SEEN = "class_seen"  # (C,) bool

NO_REGION = IGNORE_INDEX  # pseudo_mask value for pixels in no region (ignored by every loss)
LATENT = -1  # region_class value of a mined latent region
EMPTY_SLOT = -2  # region_class value of an unused slot

MANIFEST = "manifest"  # attribute/JSON key holding the manifest dict

PER_IMAGE = (GLOBAL_CLS, VIEW_BOXES, DENSE_TOKENS, PSEUDO_MASK, REGION_CLASS, LOCAL_CLS, REGION_COUNT, DONE)


@dataclass(frozen=True)
class CacheShape:
    """Sizes that fix every array shape of one store."""

    num_images: int
    embed_dim: int
    grid: tuple[int, int]  # teacher token grid (h, w)
    mask_size: int  # S, side of the stored pseudo mask
    max_regions: int  # R
    num_classes: int  # C
    num_views: int = 1  # V, the whole image + corner crops (data.transforms.view_windows)
    dense_tokens: bool = True  # whether the store keeps DENSE_TOKENS (teacher.dense_tokens)
    view_boxes: bool = False  # whether views are per-image bank boxes (VIEW_BOXES) or the manifest's windows

    def arrays(self) -> dict[str, tuple[tuple[int, ...], np.dtype, object]]:
        """name -> (shape, dtype, fill value) of every array in the store."""
        n, d, (h, w), s, r, c, v = (
            self.num_images,
            self.embed_dim,
            self.grid,
            self.mask_size,
            self.max_regions,
            self.num_classes,
            self.num_views,
        )
        dense = {DENSE_TOKENS: ((n, h, w, d), np.dtype("float16"), 0)} if self.dense_tokens else {}
        boxes = {VIEW_BOXES: ((n, v, 6), np.dtype("int32"), 0)} if self.view_boxes else {}
        return {
            GLOBAL_CLS: ((n, v, d), np.dtype("float16"), 0),
            **boxes,
            **dense,
            PSEUDO_MASK: ((n, s, s), np.dtype("uint8"), NO_REGION),
            REGION_CLASS: ((n, r), np.dtype("int16"), EMPTY_SLOT),
            LOCAL_CLS: ((n, r, d), np.dtype("float16"), 0),
            REGION_COUNT: ((n,), np.dtype("uint8"), 0),
            DONE: ((n,), np.dtype("bool"), False),
            TEXT_EMBEDDINGS: ((c, d), np.dtype("float32"), 0),
            CLASS_SEEN: ((c,), np.dtype("bool"), False),
        }


@dataclass(frozen=True)
class TeacherRecord:
    """Everything precompute stores for one image (numpy, storage dtypes)."""

    global_cls: np.ndarray  # (V, D)
    dense_tokens: np.ndarray | None  # (h, w, D); None where the store keeps none (teacher.dense_tokens)
    pseudo_mask: np.ndarray  # (S, S) uint8 region slot ids, NO_REGION elsewhere
    region_class: np.ndarray  # (R,) int16
    local_cls: np.ndarray  # (R, D)
    region_count: int
    view_boxes: np.ndarray | None = None  # (V, 6) int32 boxes of a bank store's views, else None
