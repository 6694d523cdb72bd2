"""Loss terms against small cases computed by hand."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from c2s_pipeline.student.losses import (
    attention_pool,
    dice_loss,
    global_distill_loss,
    group_cross_entropy,
    info_nce,
    local_distill_loss,
    nel_loss,
    region_prototypes,
    sigmoid_focal_loss,
)


def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos = [1, 0], t = 0.5 -> logits [2, 0]; loss = -log(e^2 / (e^2 + 1))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert math.isclose(info_nce(q, k, torch.tensor([0]), 0.5).item(), expected, rel_tol=1e-6)
    assert math.isclose(info_nce(q, k, torch.tensor([1]), 0.5).item(), -math.log(1 / (math.exp(2) + 1)), rel_tol=1e-6)
    assert info_nce(torch.zeros(0, 2), k, torch.zeros(0, dtype=torch.long), 0.5).item() == 0.0


def test_info_nce_is_lowest_when_prototypes_equal_their_tokens():
    keys = F.normalize(torch.randn(6, 16), dim=-1)
    positive = torch.arange(6)
    aligned = info_nce(keys, keys, positive, 0.07)
    permuted = info_nce(keys[torch.randperm(6, generator=torch.Generator().manual_seed(1))], keys, positive, 0.07)
    noisy = info_nce(keys + 0.3 * torch.randn(6, 16), keys, positive, 0.07)
    assert aligned < noisy < permuted


def test_attention_pool_hand_computed():
    features = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, D=2, 1, 2): positions (1,0), (0,2)
    cls = torch.tensor([[0.0, 1.0]])
    w = torch.softmax(torch.tensor([0.0, 2.0]) / math.sqrt(2), 0)  # C_g . F / sqrt(D)
    expected = w[0] * torch.tensor([1.0, 0.0]) + w[1] * torch.tensor([0.0, 2.0])
    torch.testing.assert_close(attention_pool(features, cls)[0], expected)


def test_region_prototypes_area_weights():
    features = torch.arange(4.0).view(1, 1, 2, 2)  # (B, D=1, h=2, w=2) = [[0, 1], [2, 3]]
    mask = torch.full((1, 4, 4), 255)
    mask[0, :2, :] = 0  # slot 0: top row of features
    mask[0, 2, 0] = 1  # slot 1: one pixel of feature (1, 0)
    protos, present = region_prototypes(features, mask, num_slots=3)
    torch.testing.assert_close(protos[0, :2, 0], torch.tensor([0.5, 2.0]))
    assert present.tolist() == [[True, True, False]]


def test_region_prototypes_equal_the_area_pooled_one_hot_average():
    torch.manual_seed(0)
    features, mask = torch.randn(2, 8, 16, 16), torch.randint(0, 6, (2, 64, 64))
    mask[mask >= 4] = 255  # unassigned pixels
    protos, present = region_prototypes(features, mask, num_slots=7)  # slots 4..6 unused
    onehot = F.one_hot(mask.clamp(max=4), 5)[..., :4].permute(0, 3, 1, 2).float()  # (B, R, S, S)
    weights = F.adaptive_avg_pool2d(onehot, (16, 16)).flatten(2)
    expected = torch.einsum("brn,bdn->brd", weights, features.flatten(2)) / weights.sum(-1)[..., None]
    torch.testing.assert_close(protos[:, :4], expected)
    assert present[:, :4].all() and not present[:, 4:].any() and not protos[:, 4:].any()


def test_sigmoid_focal_hand_computed():
    logits = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)  # one channel, two pixels
    targets = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    px0 = 0.25 * 0.5**2 * math.log(2)  # positive, p = 0.5
    px1 = 0.75 * p**2 * -math.log(1 - p)  # negative, p = sigmoid(2)
    got = sigmoid_focal_loss(logits, targets, torch.ones(1, 1), num_masks=1.0).item()
    assert math.isclose(got, (px0 + px1) / 2, rel_tol=1e-5)


def test_sigmoid_focal_equals_the_textbook_formula():
    """The loss takes p_t = exp(-BCE) (fewer passes); the same numbers as p_t from the sigmoid."""
    torch.manual_seed(0)
    logits = 6 * torch.randn(2, 5, 16, 16)
    targets = (torch.rand(2, 5, 16, 16) > 0.7).float()
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = 0.25 * targets + 0.75 * (1 - targets)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    valid = torch.tensor([[1.0, 1, 0, 1, 1], [1, 1, 1, 1, 0]])
    expected = ((a_t * (1 - p_t) ** 2 * ce).flatten(2).mean(-1) * valid).sum() / 3.0
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, valid, num_masks=3.0), expected)


def test_dice_hand_computed():
    logits = torch.tensor([0.0, 0.0]).view(1, 1, 1, 2)  # m = 0.5, 0.5
    targets = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    expected = 1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)
    assert math.isclose(dice_loss(logits, targets, torch.ones(1, 1), 1.0).item(), expected, rel_tol=1e-6)


def test_nel_counts_masks_and_treats_ignored_pixels_as_negatives():
    logits = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[0, 255, 0]]])  # class 0 present, class 1 absent
    got = nel_loss(logits, target, torch.ones(1, 2, dtype=torch.bool), focal_weight=100.0, dice_weight=1.0)
    pos = 0.25 * 0.25 * math.log(2)  # p_t = 0.5 for positives
    neg = 0.75 * 0.25 * math.log(2)  # ... and for negatives
    focal = ((2 * pos + neg) / 3 + neg) / 1  # channel 0 + channel 1, num_masks = 1
    dice = 1 - (2 * 1.0 + 1) / (1.5 + 2 + 1)
    assert math.isclose(got.item(), 100 * focal + dice, rel_tol=1e-5)


def test_gradients_reach_features_and_never_the_cached_tensors():
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    cls, bank = torch.randn(2, 8), torch.randn(3, 8)
    local = torch.randn(2, 3, 8)
    mask = torch.randint(0, 3, (2, 16, 16))
    loss = global_distill_loss(features, cls, bank, 0.07)
    protos, present = region_prototypes(features, mask, 3)
    loss = loss + local_distill_loss(protos, present, local, 0.07)
    loss.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert cls.grad is None and bank.grad is None and local.grad is None


def test_nel_mask_count_is_the_mean_over_ranks(monkeypatch):
    """Under DDP each rank normalises by the mean count over ranks (ZegCLIP); here rank 1 holds 6 masks."""
    import torch.distributed as dist

    from c2s_pipeline.student import losses

    present = torch.zeros(4, 3, dtype=torch.bool)
    present.view(-1)[:2] = True  # this rank: 2 masks
    assert losses.mask_count(present) == 2.0  # no process group: its own count
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t: t.add_(6.0))  # the sum with the other rank's 6
    assert losses.mask_count(present) == 4.0
    assert losses.mask_count(torch.zeros(4, 3, dtype=torch.bool)) == 3.0


def test_group_cross_entropy_keeps_the_seen_supervision_whatever_the_latent_share():
    """Mining more background as latent must not weaken the seen-class signal (a pooled mean would)."""
    torch.manual_seed(0)
    num_seen, ignore = 3, 255
    logits = torch.randn(2, num_seen + 2, 6, 6, requires_grad=True)
    seen_only = torch.full((2, 6, 6), ignore)
    seen_only[:, :2] = torch.randint(0, num_seen, (2, 2, 6))  # 24 seen pixels, the rest unannotated
    mined = seen_only.clone()
    mined[:, 2:] = num_seen + torch.randint(0, 2, (2, 4, 6))  # 48 latent pixels around them
    plain = F.cross_entropy(logits, seen_only, ignore_index=ignore)
    assert torch.equal(group_cross_entropy(logits, seen_only, num_seen), plain)  # no latent: the plain mean
    latent_part = F.cross_entropy(logits, torch.where(mined >= num_seen, mined, ignore), ignore_index=ignore)
    assert torch.allclose(group_cross_entropy(logits, mined, num_seen), plain + latent_part)
    (grad_plain,) = torch.autograd.grad(group_cross_entropy(logits, seen_only, num_seen), logits)
    (grad_mined,) = torch.autograd.grad(group_cross_entropy(logits, mined, num_seen), logits)
    seen_px = (seen_only != ignore)[:, None].expand_as(logits)
    assert torch.allclose(grad_mined[seen_px], grad_plain[seen_px])  # same pull on every seen pixel
    assert grad_mined[~seen_px].abs().sum() > 0 and grad_plain[~seen_px].abs().sum() == 0
