"""Latent class mining on token grids with planted clusters."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from c2s_pipeline.cache.schema import EMPTY_SLOT, LATENT, NO_REGION
from c2s_pipeline.config import MiningConfig
from c2s_pipeline.teacher.mining import merge_clusters, mine_pseudo_mask, region_crops

S, H = 64, 16  # pixel side, token grid side


def planted(seed=0, noise=0.05):
    """Quadrant tokens in 4 directions; the bottom-right quadrant is seen class 3, the rest unannotated."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(4, 32))
    tokens = np.zeros((H, H, 32))
    h = H // 2
    for k, (ys, xs) in enumerate(
        [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, H)), (slice(h, H), slice(0, h)), (slice(h, H), slice(h, H))]
    ):
        tokens[ys, xs] = dirs[k]
    tokens += noise * rng.normal(size=tokens.shape)
    label = np.full((S, S), 255, np.uint8)
    label[S // 2 :, S // 2 :] = 3
    return tokens, label


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_finds_planted_clusters_only_in_unannotated_pixels():
    tokens, label = planted()
    mined = mine_pseudo_mask(tokens, label, MiningConfig(), max_regions=8)
    assert mined.region_count == 4
    assert mined.region_class.tolist()[:4] == [3, LATENT, LATENT, LATENT]
    assert (mined.region_class[4:] == EMPTY_SLOT).all()
    # every seen pixel keeps its class slot exactly; latent slots never touch a seen pixel
    seen = label != 255
    assert (mined.pseudo_mask[seen] == 0).all()
    assert not np.isin(mined.pseudo_mask[seen], [1, 2, 3]).any()
    quadrants = [np.zeros((S, S), bool) for _ in range(3)]
    quadrants[0][: S // 2, : S // 2] = True
    quadrants[1][: S // 2, S // 2 :] = True
    quadrants[2][S // 2 :, : S // 2] = True
    for slot in (1, 2, 3):
        assert max(iou(mined.pseudo_mask == slot, q) for q in quadrants) > 0.8


def test_deterministic_and_respects_max_regions():
    tokens, label = planted()
    a = mine_pseudo_mask(tokens, label, MiningConfig(), max_regions=8)
    b = mine_pseudo_mask(torch.from_numpy(tokens), label, MiningConfig(), max_regions=8)
    np.testing.assert_array_equal(a.pseudo_mask, b.pseudo_mask)
    capped = mine_pseudo_mask(tokens, label, MiningConfig(), max_regions=2)
    assert capped.region_count == 2 and capped.region_class.tolist() == [3, LATENT]
    assert set(np.unique(capped.pseudo_mask)) <= {0, 1, NO_REGION}


def test_merge_threshold_merges_near_duplicates_and_min_size_drops_small():
    tokens, label = planted()
    tokens[: H // 2, : H // 2] = tokens[: H // 2, H // 2 :].mean((0, 1))  # two quadrants now identical
    merged = mine_pseudo_mask(tokens, label, MiningConfig(), max_regions=8)
    assert merged.region_count == 3  # seen + 2 latent
    # a single odd token is below min_region_frac and must not become a region
    tokens, label = planted()
    tokens[0, 0] = np.random.default_rng(5).normal(size=32) * 10
    mined = mine_pseudo_mask(tokens, label, dataclasses.replace(MiningConfig(), min_region_frac=0.02), 8)
    assert mined.region_count == 4
    groups = merge_clusters(np.array([[1.0, 0], [0.99, 0.05], [0, 1]]), threshold=0.9)
    assert groups[0] == groups[1] != groups[2]


def test_fully_annotated_image_has_no_latent_regions():
    tokens, _ = planted()
    label = np.zeros((S, S), np.uint8)
    label[:, S // 2 :] = 2
    mined = mine_pseudo_mask(tokens, label, MiningConfig(), max_regions=4)
    assert mined.region_class.tolist() == [0, 2, EMPTY_SLOT, EMPTY_SLOT]
    assert (mined.pseudo_mask == np.where(label == 0, 0, 1)).all()


def test_region_crops_zero_outside_the_region():
    image = torch.randn(3, S, S)
    mask = torch.full((S, S), NO_REGION, dtype=torch.uint8)
    mask[10:20, 30:50] = 0
    mask[40:60, 5:15] = 1
    crops = region_crops(image, mask, 2, crop_size=16)
    assert crops.shape == (2, 3, 16, 16)
    # crop 0 covers rows 10..20 of a 20-px square around the region: its top and bottom quarters are outside
    assert crops[0, :, :3].abs().max() < 1e-6 and crops[0, :, -3:].abs().max() < 1e-6
    assert crops[0, :, 6:10].abs().mean() > 0.1
    assert region_crops(image, mask, 0, crop_size=16).shape == (0, 3, 16, 16)
