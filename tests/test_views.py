"""The view bank (teacher.views: bank): MMSeg's training geometry on stored views, drawn without unseen labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from c2s_pipeline.cache.store import CacheReader
from c2s_pipeline.data.base import IGNORE_INDEX, to_seen_only
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    draw_bank_views,
    keep_ratio_size,
    photometric_distortion,
)
from c2s_pipeline.stages import precompute
from c2s_pipeline.student.data import DistillDataset
from c2s_pipeline.teacher.identity import locate_store
from tests.layouts import make_voc

SIZE = 64
VOC_RAWS = {"train_aug": [[0, 1, 16, 255], [20, 3, 17, 0], [5, 5, 19, 2]], "val": [[1, 2, 3, 4]]}


def bank_params(tiny_params, root, **teacher):
    """The tiny pipeline on a VOC-layout fixture (48 x 64 images) with a bank of 4 views at 64 px."""
    p = tiny_params
    return dataclasses.replace(
        p,
        data=dataclasses.replace(
            p.data, dataset="voc", root=str(root / "VOCdevkit" / "VOC2012"), train_split="train_aug", image_size=SIZE
        ),
        teacher=dataclasses.replace(
            p.teacher, **{"views": "bank", "view_count": 4, "view_scale": (4 * SIZE, SIZE), **teacher}
        ),
        mining=dataclasses.replace(p.mining, window_sizes=(2,)),
        student=dataclasses.replace(p.student, normalisation="imagenet"),
        train=dataclasses.replace(p.train, flip=False),
    )


@pytest.fixture
def bank_store(tiny_params, tmp_path):
    make_voc(tmp_path, VOC_RAWS)
    params = bank_params(tiny_params, tmp_path)
    path = precompute.run(params, split="train_aug", cache_dir=tmp_path / "cache")
    return params, path


def test_bank_views_are_reproducible_ratio_kept_and_fit():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(375, 500)).astype(np.uint8)
    kwargs = dict(count=6, crop=512, scale=(2048, 512), ratio=(0.5, 2.0), cat_max_ratio=0.75)
    boxes = draw_bank_views(label, "2007_000032", **kwargs)
    np.testing.assert_array_equal(boxes, draw_bank_views(label, "2007_000032", **kwargs))
    assert not np.array_equal(boxes, draw_bank_views(label, "2007_000033", **kwargs))
    rh, rw, top, left, ch, cw = boxes.T
    np.testing.assert_allclose(rw / rh, 500 / 375, rtol=0.01)  # the ratio is kept
    assert (rh >= 256 - 1).all() and (rh <= 1024).all()  # short side 512 x [0.5, 2]
    assert (top + ch <= rh).all() and (left + cw <= rw).all() and (top >= 0).all() and (left >= 0).all()
    np.testing.assert_array_equal(ch, np.minimum(512, rh))  # a full window, or all there is
    assert len(set(rh.tolist())) > 1  # the scale is drawn per view


def test_cat_max_ratio_counts_seen_labels_only():
    """A window where one seen class covers everything labelled is redrawn, whatever unseen pixels it holds:
    the ignore index (what unseen pixels are in a seen-only label) is not a class."""
    label = np.full((64, 64), 1, np.uint8)
    label[:, 40:] = 7  # an unseen class
    seen_only = np.where(label == 7, IGNORE_INDEX, label).astype(np.uint8)
    kwargs = dict(count=8, crop=32, scale=(64, 64), ratio=(1.0, 1.0), cat_max_ratio=0.75)
    windows = [draw_bank_views(seen_only, f"im{k}", **kwargs) for k in range(6)]
    read_unseen = [draw_bank_views(label, f"im{k}", **kwargs) for k in range(6)]
    assert any(not np.array_equal(a, b) for a, b in zip(windows, read_unseen))  # the test can tell them apart
    cut = lambda lab, b: lab[b[2] : b[2] + b[4], b[3] : b[3] + b[5]]  # noqa: E731
    # with the unseen class read, windows spanning both classes are kept; with seen labels only, never on purpose
    assert any(len(np.unique(cut(label, b))) == 2 for w in read_unseen for b in w)


def test_precompute_draws_the_bank_from_seen_only_labels(bank_store):
    params, path = bank_store
    reader = CacheReader(path, seen_only=True)
    full = dataset_from_params(params, "train_aug", seen_only=False)
    t = params.teacher
    for i in range(len(full)):
        seen_only = to_seen_only(full[i].label, full.spec)
        want = draw_bank_views(
            seen_only,
            full.ids[i],
            count=t.view_count,
            crop=SIZE,
            scale=t.view_scale,
            ratio=t.view_ratio,
            cat_max_ratio=t.cat_max_ratio,
        )
        np.testing.assert_array_equal(reader.read(i).view_boxes, want)
    assert reader.shape.num_views == 4 and reader.manifest["views"] == "bank"
    with pytest.raises(Exception, match="view bank"):
        reader.views()


def _expected_view(image: np.ndarray, label: np.ndarray, box) -> tuple[torch.Tensor, np.ndarray]:
    """What MMSeg's Resize (ratio kept), RandomCrop, Normalize and Pad make of an image and label."""
    rh, rw, top, left, ch, cw = (int(v) for v in box)
    img = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))[top : top + ch, left : left + cw]
    lab = np.asarray(Image.fromarray(label).resize((rw, rh), Image.NEAREST))[top : top + ch, left : left + cw]
    x = torch.zeros(3, SIZE, SIZE)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    x[:, :ch, :cw] = (torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 255 - mean) / std
    padded = np.full((SIZE, SIZE), IGNORE_INDEX, np.uint8)
    padded[:ch, :cw] = lab
    return x, padded


def test_a_training_item_is_its_stored_views_pixels_and_cls(bank_store):
    params, path = bank_store
    reader = CacheReader(path, seen_only=True)
    dataset = dataset_from_params(params, "train_aug", seen_only=True)
    distill = DistillDataset(reader, dataset, SIZE, params.train, normalisation="imagenet")
    seen_index = distill.seen_index
    for i in range(len(dataset)):
        rec = reader.read(i)
        stored = rec.global_cls.astype(np.float32)
        shown = set()
        for step in range(12):
            item = distill[(i, step)]
            match = [k for k in range(len(stored)) if np.array_equal(item["global_cls"].numpy(), stored[k])]
            assert len(match) == 1
            image, label = _expected_view(dataset[i].image, dataset[i].label, rec.view_boxes[match[0]])
            torch.testing.assert_close(item["image"], image, atol=1e-5, rtol=0)
            np.testing.assert_array_equal(item["label"].numpy(), seen_index[label])
            ch, cw = rec.view_boxes[match[0]][4:]
            assert (item["pseudo_mask"][ch:] == IGNORE_INDEX).all() and (item["pseudo_mask"][:, cw:] == 255).all()
            shown.add(match[0])
        assert len(shown) > 1


def test_the_teacher_sees_the_view_the_student_sees(bank_store):
    """The stored CLS of a view is CLIP's of that view padded with zeros after normalisation (MMSeg's order)."""
    from c2s_pipeline.teacher.clip import load_clip

    params, path = bank_store
    t = params.teacher
    clip = load_clip(t.clip_model, t.pretrained, image_size=SIZE, device="cpu", dense_mode=t.dense_mode)
    dataset = dataset_from_params(params, "train_aug", seen_only=True)
    rec = CacheReader(path, seen_only=True).read(1)
    for k, box in enumerate(rec.view_boxes):
        rh, rw, top, left, ch, cw = (int(v) for v in box)
        view = np.asarray(Image.fromarray(dataset[1].image).resize((rw, rh), Image.BILINEAR))[
            top : top + ch, left : left + cw
        ]
        x = clip.preprocess(np.pad(view, ((0, SIZE - ch), (0, SIZE - cw), (0, 0)))[None], SIZE)
        x[..., ch:, :] = 0
        x[..., :, cw:] = 0  # zero after normalising
        want = clip.encode_crops(x)[0].numpy()
        np.testing.assert_allclose(rec.global_cls[k].astype(np.float32), want, atol=2e-3)


def test_photometric_distortion_keeps_shape_and_changes_colour_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 24, 3)).astype(np.uint8)
    outs = [photometric_distortion(image, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, image) for o in outs) >= 6  # each op runs half the time
    np.testing.assert_array_equal(photometric_distortion(image, np.random.default_rng(3)), outs[3])


def test_keep_ratio_size_is_mmcvs_rescale():
    assert keep_ratio_size(375, 500, 2048, 512) == (512, 683)
    assert keep_ratio_size(500, 375, 2048, 512) == (683, 512)
    assert keep_ratio_size(100, 1000, 2048, 512) == (205, 2048)  # the long side binds


def test_photometric_distortion_reaches_the_student_only(bank_store):
    """train.photometric: the image changes, its label, pseudo mask and stored CLS do not."""
    params, path = bank_store
    reader = CacheReader(path, seen_only=True)
    dataset = dataset_from_params(params, "train_aug", seen_only=True)
    plain = DistillDataset(reader, dataset, SIZE, params.train, normalisation="imagenet")
    distorted = DistillDataset(
        reader, dataset, SIZE, dataclasses.replace(params.train, photometric=True), normalisation="imagenet"
    )
    changed = 0
    for step in range(6):
        a, b = plain[(0, step)], distorted[(0, step)]
        for key in ("label", "pseudo_mask", "global_cls"):
            assert torch.equal(a[key], b[key])
        changed += not torch.equal(a["image"], b["image"])
    assert changed >= 3


def test_only_a_bank_store_carries_the_banks_recipe_in_its_address(tiny_params, tmp_path):
    """Corner-view stores keep the fingerprints they had; a bank's recipe is part of its store's identity."""
    make_voc(tmp_path, VOC_RAWS)
    corners = dataclasses.replace(
        bank_params(tiny_params, tmp_path),
        teacher=dataclasses.replace(bank_params(tiny_params, tmp_path).teacher, views="corners"),
    )
    bank = bank_params(tiny_params, tmp_path)
    more = bank_params(tiny_params, tmp_path, view_count=5)
    ids = {
        name: locate_store(p, "train_aug", tmp_path / "cache")[1]
        for name, p in (("corners", corners), ("bank", bank), ("more", more))
    }
    assert "view_bank" not in ids["corners"].inputs
    assert ids["bank"].inputs["view_bank"] == {
        "count": 4,
        "scale": [4 * SIZE, SIZE],
        "ratio": [0.5, 2.0],
        "cat_max_ratio": 0.75,
    }
    assert len({i.fingerprint for i in ids.values()}) == 3
    val = locate_store(bank, "val", tmp_path / "cache")[1]  # evaluation splits hold no bank
    assert "view_bank" not in val.inputs
