"""Student contracts over several smp architectures, and the C2S task's behaviour."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from c2s_pipeline.cache.schema import EMPTY_SLOT, LATENT
from c2s_pipeline.config import LossConfig
from c2s_pipeline.student.checkpoint import CheckpointError
from c2s_pipeline.student.model import Student, StudentError, class_logits
from c2s_pipeline.student.task import LOSS_KEYS, C2STask

ARCHS = [("segformer", "mit_b0"), ("unet", "resnet18"), ("fpn", "resnet18"), ("deeplabv3plus", "resnet18")]


@pytest.mark.parametrize("arch, encoder", ARCHS)
def test_student_contract(arch, encoder):
    torch.manual_seed(0)
    student = Student(arch, encoder, None, embed_dim=16)
    text = torch.randn(5, 16)
    for size in (64, 96):
        x = torch.randn(2, 3, size, size)
        feats = student(x)
        assert feats.shape[:2] == (2, 16) and size % feats.shape[-1] == 0
        assert feats.shape[-1] < size or arch == "unet"  # D channels stay at the decoder stride
        logits = student.predict_logits(x, text, 50.0)
        assert logits.shape == (2, 5, size, size) and torch.isfinite(logits).all()
        assert logits.abs().max() <= 50.0 + 1e-3  # scaled cosine
        logits.mean().backward()
        assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
        student.zero_grad()
    clone = Student(arch, encoder, None, embed_dim=16)
    clone.load_state_dict(student.state_dict())
    student.eval(), clone.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(student(x), clone(x))


@pytest.mark.parametrize(
    "arch, encoder, head, form",
    [
        ("fpn", "resnet18", "linear", "cosine"),
        ("segformer", "mit_b0", "linear", "cosine"),
        ("fpn", "resnet18", "isometric", "cosine"),
        ("fpn", "resnet18", "linear", "dot"),
    ],
)
def test_predict_labels_are_the_argmax_of_the_upsampled_logits_everywhere(arch, encoder, head, form):
    torch.manual_seed(0)
    student = Student(arch, encoder, None, embed_dim=256, head=head, logits=form).eval()
    x, text = torch.randn(2, 3, 96, 128), torch.randn(20, 256)
    with torch.no_grad():
        labels, logits = student.predict_labels(x, text, 50.0), student.predict_logits(x, text, 50.0)
    assert labels.shape == (2, 96, 128) and labels.dtype == torch.int64
    assert torch.equal(labels, logits.argmax(1))
    assert len(labels.unique()) > 3  # a class map, not a constant


@pytest.mark.parametrize(
    "arch, encoder, head, dim",
    [(a, e, "linear", 32) for a, e in ARCHS]
    + [("fpn", "resnet18", "isometric", 256), ("linknet", "resnet18", "isometric", 32)],
)
def test_predict_logits_equal_the_cosine_of_the_d_channel_map(arch, encoder, head, dim):
    """The inference path (text folded into a 1x1 head, or not) gives the training path's logits."""
    torch.manual_seed(0)
    student = Student(arch, encoder, None, embed_dim=dim, head=head).eval()
    assert parametrize.is_parametrized(student.net.segmentation_head[0], "weight") == (head == "isometric")
    x, text = torch.randn(2, 3, 64, 64), torch.randn(7, dim)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(
            class_logits(student(x), text, 50.0), size=(64, 64), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(student.predict_logits(x, text, 50.0), expected, atol=1e-4, rtol=1e-4)


def test_isometric_head_keeps_orthonormal_columns_as_it_trains():
    """W^T W = I (K = 128 < D = 256) after the trainer's fused AdamW steps, and the no-grad path's cached
    weight follows the steps and a load_state_dict."""
    torch.manual_seed(0)
    student = Student("fpn", "resnet18", None, embed_dim=256, head="isometric").eval()
    x, text = torch.randn(2, 3, 64, 64), torch.randn(5, 256)
    up = lambda t: torch.nn.functional.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        before = student.predict_logits(x, text, 50.0)
    opt = torch.optim.AdamW(student.net.segmentation_head.parameters(), lr=0.05, fused=True)
    for _ in range(2):
        class_logits(student(x), text, 50.0).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()
    weight = student.net.segmentation_head[0].weight[:, :, 0, 0]
    assert weight.shape == (256, 128)  # fpn's decoder ends in 128 channels
    torch.testing.assert_close(weight.T @ weight, torch.eye(128), atol=1e-5, rtol=0)
    with torch.no_grad():
        after, expected = student.predict_logits(x, text, 50.0), up(class_logits(student(x), text, 50.0))
        assert (after - before).abs().max() > 1e-2
        torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)
        student.load_state_dict(Student("fpn", "resnet18", None, embed_dim=256, head="isometric").state_dict())
        torch.testing.assert_close(
            student.predict_logits(x, text, 50.0), up(class_logits(student(x), text, 50.0)), atol=1e-4, rtol=1e-4
        )


def test_isometric_head_needs_no_more_decoder_channels_than_embed_dim():
    with pytest.raises(StudentError, match="256.*use student.head linear"):
        Student("segformer", "mit_b0", None, embed_dim=64, head="isometric")
    with pytest.raises(StudentError, match=r"\(3, 3\) head from 16: use student.head linear"):
        Student("unet", "resnet18", None, embed_dim=64, head="isometric")
    with pytest.raises(StudentError, match="choose linear or isometric"):
        Student("fpn", "resnet18", None, embed_dim=128, head="cosine")


def test_unknown_architecture_lists_choices():
    with pytest.raises(StudentError, match="architectures: .*segformer"):
        Student("transformer9000", "mit_b0", None, embed_dim=8)


def fixed_batch(d=16, s=64, r=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pm = torch.full((2, s, s), 255)
    pm[:, : s // 2, : s // 2] = 0
    pm[:, s // 2 :, :] = 1
    pm[1, : s // 2, s // 2 :] = 2
    region_class = torch.full((2, r), EMPTY_SLOT)
    region_class[:, 0], region_class[:, 1] = 2, LATENT
    region_class[1, 2] = LATENT
    label = torch.full((2, s, s), 255)
    label[:, : s // 2, : s // 2] = 2
    return {
        "image": torch.randn(2, 3, s, s, generator=g),
        "pseudo_mask": pm,
        "region_class": region_class,
        "local_cls": torch.randn(2, r, d, generator=g),
        "global_cls": torch.randn(2, d, generator=g),
        "label": label,
    }


def make_task(cfg=LossConfig(), d=16):  # noqa: B008  (a frozen dataclass)
    torch.manual_seed(0)
    return C2STask(Student("unet", "resnet18", None, d), torch.randn(4, d), cfg, 50.0)


def test_every_term_decreases_on_a_fixed_batch():
    task, batch = make_task(), fixed_batch()
    opt = torch.optim.AdamW(task.parameters(), 1e-3)
    with torch.no_grad():  # fill the CLS bank first: with one fixed batch it holds copies of the positives
        for _ in range(12):
            task(batch)
        first = {k: float(v) for k, v in task(batch).items()}
    for _ in range(60):
        out = task(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in task(batch).items()}
    assert set(first) == set(LOSS_KEYS)
    for key in LOSS_KEYS:
        assert last[key] < first[key], f"{key}: {first[key]:.3f} -> {last[key]:.3f}"


def test_toggles_zero_their_terms_and_baseline_ignores_the_teacher():
    batch = fixed_batch()
    no_global = make_task(dataclasses.replace(LossConfig(), use_global=False, use_local=False))(batch)
    assert float(no_global["global_loss"]) == 0 and float(no_global["local_loss"]) == 0
    baseline_cfg = dataclasses.replace(LossConfig(), use_global=False, use_local=False, use_latent=False)
    task = make_task(baseline_cfg)
    assert task.generator is None
    a = task(batch)["loss"]
    other = {
        **batch,
        "pseudo_mask": torch.zeros_like(batch["pseudo_mask"]),
        "local_cls": torch.randn(2, 6, 16),
        "global_cls": torch.randn(2, 16),
    }
    torch.testing.assert_close(task(other)["loss"], a)  # teacher outputs are not read
    relabelled = {**batch, "label": torch.full_like(batch["label"], 255)}
    assert float(task(relabelled)["loss"]) != float(a)  # ... but the seen labels are


def test_latent_regions_add_channels_only_with_latent_on():
    batch = fixed_batch()
    with_latent = make_task()
    logits, target, valid = with_latent._pseudo_logits(
        with_latent.student(batch["image"]), batch, *_protos(with_latent, batch)
    )
    assert logits.shape[1] == 4 + 2 and valid.tolist() == [[True] * 5 + [False], [True] * 6]
    assert set(target[0].unique().tolist()) == {2, 4, 255} and set(target[1].unique().tolist()) == {2, 4, 5}


def test_ce_of_the_pseudo_mask_is_grouped_by_default_and_pooled_on_request():
    """ce_loss = seen-pixel mean + latent-pixel mean (grouped) or one mean over both (pooled)."""
    batch = fixed_batch()
    task = make_task()
    with torch.no_grad():
        feats = task.student(batch["image"])
        logits, target, valid = task._pseudo_logits(feats, batch, *_protos(task, batch))
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        per_pixel = F.cross_entropy(
            logits.masked_fill(~valid[..., None, None], -1e4), target, ignore_index=255, reduction="none"
        )
        seen, latent = (target < 4), (target >= 4) & (target != 255)
        grouped = per_pixel[seen].mean() + per_pixel[latent].mean()
        pooled = per_pixel[seen | latent].mean()
        assert abs(float(grouped - pooled)) > 0.1  # the batch tells the two apart
        torch.testing.assert_close(task(batch)["ce_loss"], grouped)
        task.cfg = dataclasses.replace(task.cfg, ce_reduction="pooled")
        torch.testing.assert_close(task(batch)["ce_loss"], pooled)


def _protos(task, batch):
    from c2s_pipeline.student.losses import region_prototypes

    return region_prototypes(task.student(batch["image"]), batch["pseudo_mask"], batch["region_class"].shape[1])


def test_cls_bank_is_a_fifo_of_teacher_tokens():
    task = make_task(dataclasses.replace(LossConfig(), bank_size=3))
    rows = [torch.randn(2, 16) for _ in range(2)]
    for r in rows:
        task._push_bank(r)
    assert int(task.bank_count) == 3
    torch.testing.assert_close(task.bank, torch.stack([rows[1][1], rows[0][1], rows[1][0]]))
    assert "bank" in task.state_dict() and not task.bank.requires_grad


def test_class_logits_equal_the_scaled_cosine_of_the_normalised_map():
    """Logits are (A F) / |F| (the map is never divided); the same numbers as A . (F / |F|)."""
    torch.manual_seed(0)
    features, text = torch.randn(2, 16, 8, 8), torch.randn(5, 16)
    expected = 50.0 * torch.einsum(
        "bdhw,cd->bchw", torch.nn.functional.normalize(features, dim=1), torch.nn.functional.normalize(text, dim=-1)
    )
    torch.testing.assert_close(class_logits(features, text, 50.0), expected)
    features[0, :, 0, 0] = 0  # a zero feature scores 0, as F.normalize
    assert not class_logits(features, text, 50.0)[0, :, 0, 0].any()


def test_class_logits_per_image_text_equals_shared_text_image_by_image():
    torch.manual_seed(0)
    features, text = torch.randn(2, 8, 3, 5), torch.randn(2, 4, 8)  # a vocabulary per image
    per_image = class_logits(features, text, 50.0)
    for b in range(2):
        torch.testing.assert_close(per_image[b], class_logits(features[b : b + 1], text[b], 50.0)[0])
    cos = torch.nn.functional.cosine_similarity(features[0, :, 1, 2], text[0, 3], dim=0)
    torch.testing.assert_close(per_image[0, 3, 1, 2], 50.0 * cos)


def test_training_and_evaluation_share_the_students_logit_scale():
    from c2s_pipeline.config import LossConfig
    from c2s_pipeline.student.task import C2STask

    torch.manual_seed(0)
    student = Student("fpn", "resnet18", None, embed_dim=8).eval()  # no dropout: one forward = another
    text = torch.randn(3, 8)
    x = torch.randn(1, 3, 64, 64)
    for scale in (10.0, 50.0):
        task = C2STask(student, text, LossConfig(), logit_scale=scale)
        torch.testing.assert_close(task._seen_logits(student(x)), class_logits(student(x), text, scale))


def test_encoder_weights_from_a_local_file_load_exactly_and_another_encoders_file_is_refused(tmp_path):
    """The offline route to pretrained encoders: `student.encoder_weights` may name a state_dict file."""
    torch.manual_seed(0)
    source = Student("fpn", "resnet18", None, embed_dim=16).net.encoder.state_dict()
    path = tmp_path / "encoder.pt"
    torch.save(source, path)
    torch.manual_seed(1)
    loaded = Student("fpn", "resnet18", str(path), embed_dim=16).net.encoder.state_dict()
    assert loaded.keys() == source.keys() and all(torch.equal(loaded[k], source[k]) for k in source)
    torch.manual_seed(1)
    assert not torch.equal(
        Student("fpn", "resnet18", None, embed_dim=16).net.encoder.conv1.weight, source["conv1.weight"]
    )
    with pytest.raises(StudentError, match=r"encoder.pt does not fit the resnet34 encoder \(.*\); pass a state_dict"):
        Student("fpn", "resnet34", str(path), embed_dim=16)
    with pytest.raises(CheckpointError, match="missing.pt not found; pass a state_dict file of smp's resnet18 .* none"):
        Student("fpn", "resnet18", str(tmp_path / "missing.pt"), embed_dim=16)
    with pytest.raises(CheckpointError, match="weights/enc not found"):  # path-like: not an smp name
        Student("fpn", "resnet18", str(tmp_path / "weights" / "enc"), embed_dim=16)
