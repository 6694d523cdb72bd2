"""Latent class mining (Eq. 1): cluster the teacher's dense tokens where no seen label exists.

Seen-labelled pixels keep their class exactly; latent clusters only ever fill unannotated pixels
(background, unseen objects, ignore), so mining can never relabel a seen pixel.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from c2s_pipeline.cache.schema import EMPTY_SLOT, LATENT, NO_REGION
from c2s_pipeline.config import MiningConfig
from c2s_pipeline.data.base import IGNORE_INDEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MinedRegions:
    pseudo_mask: np.ndarray  # (S, S) uint8 region slot id, NO_REGION elsewhere
    region_class: np.ndarray  # (R,) int16 class id, LATENT, or EMPTY_SLOT
    region_count: int


def annotated_tokens(seen_label: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: tokens whose pixels are mostly seen-labelled."""
    labelled = torch.from_numpy((seen_label != IGNORE_INDEX).astype(np.float32))[None, None]
    return (F.adaptive_avg_pool2d(labelled, grid)[0, 0] > 0.5).numpy()


def window_seeds(tokens: np.ndarray, free: np.ndarray, window_sizes: tuple[int, ...]) -> np.ndarray:
    """(K, D) seeds: mean of the unannotated tokens in each sliding window (stride O/2).

    Annotated tokens are zeroed (Eq. 1) and windows mostly annotated give no seed.
    """
    h, w, _ = tokens.shape
    zeroed = tokens * free[..., None]
    seeds = []
    for size in window_sizes:
        size = min(size, h, w)
        stride = max(1, size // 2)
        for y in range(0, h - size + 1, stride):
            for x in range(0, w - size + 1, stride):
                n_free = free[y : y + size, x : x + size].sum()
                if n_free * 2 >= size * size:
                    seeds.append(zeroed[y : y + size, x : x + size].sum((0, 1)) / n_free)
    if not seeds:
        return np.zeros((0, tokens.shape[-1]), np.float32)
    unique = np.unique(np.round(np.stack(seeds), 5), axis=0)
    return unique / np.maximum(np.linalg.norm(unique, axis=1, keepdims=True), 1e-8)


def merge_clusters(centroids: np.ndarray, threshold: float) -> np.ndarray:
    """(K,) merged group id per cluster: union of every pair whose centroid cosine passes threshold."""
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-8)
    parent = np.arange(len(unit))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(unit @ unit.T, k=1) > threshold)):
        parent[root(i)] = root(j)
    return np.array([root(i) for i in range(len(unit))])


def latent_token_map(tokens: np.ndarray, free: np.ndarray, cfg: MiningConfig) -> np.ndarray:
    """(h, w) int: latent cluster index per unannotated token, -1 elsewhere, largest cluster first."""
    out = np.full(free.shape, -1, dtype=np.int64)
    x = tokens[free]  # (n_free, D)
    seeds = window_seeds(tokens, free, cfg.window_sizes)
    k = min(len(seeds), len(x))
    if k < 1 or len(x) < 2:
        return out
    with warnings.catch_warnings():  # duplicate points make sklearn warn; the result is still valid
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, init=seeds[:k], n_init=1, max_iter=cfg.kmeans_iters, random_state=cfg.seed).fit(x)
    groups = merge_clusters(km.cluster_centers_, cfg.merge_threshold)[km.labels_]
    ids, sizes = np.unique(groups, return_counts=True)
    keep = [g for g, n in sorted(zip(ids, sizes), key=lambda t: (-t[1], t[0])) if n >= cfg.min_region_frac * free.size][
        : cfg.max_latent
    ]
    labels = np.full(len(x), -1)
    for rank, g in enumerate(keep):
        labels[groups == g] = rank
    out[free] = labels
    return out


def mine_pseudo_mask(dense_tokens, seen_label: np.ndarray, cfg: MiningConfig, max_regions: int) -> MinedRegions:
    """Pseudo mask Y_p = seen labels + mined latent clusters, as region slots.

    Args:
        dense_tokens: (h, w, D) teacher tokens.
        seen_label: (S, S) uint8 seen class ids, IGNORE_INDEX where unannotated.
        cfg: mining parameters.
        max_regions: number of slots R; seen classes first (ascending id), then latent by size.
    """
    tokens = np.asarray(torch.as_tensor(dense_tokens).float().cpu(), dtype=np.float32)
    tokens = tokens / np.maximum(np.linalg.norm(tokens, axis=-1, keepdims=True), 1e-8)
    h, w, _ = tokens.shape
    s = seen_label.shape[0]
    seen_pixels = seen_label != IGNORE_INDEX
    latent = latent_token_map(tokens, ~annotated_tokens(seen_label, (h, w)), cfg)
    latent_px = latent[(np.arange(s) * h) // s][:, (np.arange(s) * w) // s]  # nearest upsample (S, S)
    latent_px[seen_pixels] = -1

    classes, class_sizes = np.unique(seen_label[seen_pixels], return_counts=True)
    if len(classes) > max_regions:
        log.warning("%d seen classes exceed %d region slots; keeping the largest", len(classes), max_regions)
        classes = np.sort(classes[np.argsort(-class_sizes, kind="stable")[:max_regions]])
    regions = [(int(c), seen_label == c) for c in classes]
    for k in range(latent.max() + 1):
        if len(regions) == max_regions:
            break
        if (latent_px == k).any():
            regions.append((LATENT, latent_px == k))

    mask = np.full((s, s), NO_REGION, dtype=np.uint8)
    region_class = np.full(max_regions, EMPTY_SLOT, dtype=np.int16)
    for slot, (cls, pixels) in enumerate(regions):
        mask[pixels] = slot
        region_class[slot] = cls
    return MinedRegions(pseudo_mask=mask, region_class=region_class, region_count=len(regions))


def region_crops(image: torch.Tensor, pseudo_mask: torch.Tensor, region_count: int, crop_size: int) -> torch.Tensor:
    """(n, 3, crop, crop): each region's square bounding-box crop, pixels outside the region zeroed.

    Zero is the dataset mean after CLIP normalisation, so masked-out context carries no signal.
    """
    crops = []
    side_max = image.shape[-1]
    for r in range(region_count):
        inside = pseudo_mask == r  # (S, S)
        ys, xs = torch.nonzero(inside, as_tuple=True)
        y0, y1, x0, x1 = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
        side = min(max(y1 - y0, x1 - x0), side_max)
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        top = min(max(cy - side // 2, 0), side_max - side)
        left = min(max(cx - side // 2, 0), side_max - side)
        patch = (image * inside.to(image.dtype))[:, top : top + side, left : left + side]
        crops.append(
            F.interpolate(
                patch[None], size=(crop_size, crop_size), mode="bilinear", align_corners=False, antialias=True
            )[0]
        )
    if not crops:
        return image.new_zeros((0, image.shape[0], crop_size, crop_size))
    return torch.stack(crops)
