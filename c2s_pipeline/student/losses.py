"""C2S loss terms, each a small function with its formula in the docstring."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from c2s_pipeline.data.base import IGNORE_INDEX


def info_nce(queries: torch.Tensor, keys: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """-mean_q log softmax_k(cos(q, k) / t)[positive_q]; queries (Q, D), keys (K, D), positive (Q,)."""
    if queries.shape[0] == 0:
        return queries.sum() * 0.0
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature  # (Q, K)
    return F.cross_entropy(logits, positive)


def attention_pool(features: torch.Tensor, global_cls: torch.Tensor) -> torch.Tensor:
    """F_g = W F^T with W = softmax over positions of C_g^T F / sqrt(D); (B, D, h, w), (B, D) -> (B, D)."""
    f = features.flatten(2)  # (B, D, hw)
    # Broadcast products and sums in the map's own layout: on CPU 2.5x faster forward + backward than the
    # einsums (whose matrix-vector products hand back gradients in a transposed layout); same numbers.
    weights = torch.softmax((global_cls[:, :, None] * f).sum(1) / math.sqrt(f.shape[1]), dim=-1)  # (B, hw)
    return (f * weights[:, None]).sum(-1)


def global_distill_loss(
    features: torch.Tensor, global_cls: torch.Tensor, bank: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """InfoNCE of F_g against [batch C_g; bank C_g], each image's own C_g the positive."""
    keys = global_cls if bank is None or len(bank) == 0 else torch.cat([global_cls, bank])
    positive = torch.arange(len(global_cls), device=features.device)
    return info_nce(attention_pool(features, global_cls), keys, positive, temperature)


def region_prototypes(features: torch.Tensor, pseudo_mask: torch.Tensor, num_slots: int):
    """Mask-average of F over each region slot.

    Each slot weighs a feature cell by how many of its (B, S, S) mask pixels fall in that cell (area
    downsampling, so small regions keep weight), counted with one bincount instead of a full-resolution
    one-hot. Returns prototypes (B, R, D) and present (B, R) bool.
    """
    b, d, h, w = features.shape
    size_h, size_w = pseudo_mask.shape[-2:]
    dev = features.device
    cell = (torch.arange(size_h, device=dev) * h // size_h)[:, None] * w + (
        torch.arange(size_w, device=dev) * w // size_w
    )[None, :]  # (S, S) cell id
    slot = pseudo_mask.clamp(max=num_slots).long()  # NO_REGION -> R
    used = int(slot.masked_fill(slot == num_slots, -1).max()) + 1  # slots past the last used one are empty
    slot = slot.clamp(max=used)  # NO_REGION -> used
    index = (torch.arange(b, device=dev)[:, None, None] * (used + 1) + slot) * (h * w) + cell
    counts = torch.bincount(index.flatten(), minlength=b * (used + 1) * h * w)
    weights = counts.view(b, used + 1, h * w)[:, :used].to(features.dtype)  # (B, used, hw)
    mass = weights.sum(-1)  # (B, used)
    # (B, D, hw) @ (B, hw, used), then the small result transposed: the map's gradient keeps its layout
    protos = torch.bmm(features.flatten(2), weights.transpose(1, 2)).transpose(1, 2) / mass.clamp_min(1e-6)[..., None]
    pad = num_slots - used
    return F.pad(protos, (0, 0, 0, pad)), F.pad(mass, (0, pad)) > 0


def local_distill_loss(
    prototypes: torch.Tensor, present: torch.Tensor, local_cls: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE of each present f_l against every present C_l of the batch; same (image, slot) positive."""
    q, k = prototypes[present], local_cls[present]  # (n, D) each
    return info_nce(q, k, torch.arange(len(q), device=q.device), temperature)


def one_hot_targets(target: torch.Tensor, num_channels: int) -> torch.Tensor:
    """(B, H, W) with IGNORE_INDEX -> (B, K, H, W) float; ignored pixels are negatives for every class."""
    return (target[:, None] == torch.arange(num_channels, device=target.device)[None, :, None, None]).float()


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    num_masks: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """sum_{b,k valid} mean_px[-a_t (1 - p_t)^g log p_t] / num_masks (one-vs-rest, as ZegCLIP)."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-ce)  # = p for a positive, 1 - p for a negative: fewer passes over (B, K, H, W)
    a_t = (1 - alpha) + (2 * alpha - 1) * targets
    per_mask = (a_t * (1 - p_t).pow(gamma) * ce).flatten(2).mean(-1)  # (B, K)
    return (per_mask * valid).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, present: torch.Tensor, num_masks: float) -> torch.Tensor:
    """sum_{b,k present}[1 - (2 sum m t + 1) / (sum m + sum t + 1)] / num_masks, m = sigmoid(logits)."""
    m, t = torch.sigmoid(logits).flatten(2), targets.flatten(2)
    dice = 1 - (2 * (m * t).sum(-1) + 1) / (m.sum(-1) + t.sum(-1) + 1)  # (B, K)
    return (dice * present).sum() / num_masks


def mask_count(present: torch.Tensor) -> float:
    """num_masks: the (image, class present) pairs of the batch; under DDP their mean over ranks (ZegCLIP,
    after DETR), so every rank normalises by the same number; at least 1."""
    count = present.sum().float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(float(count), 1.0)


def nel_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    focal_weight: float = 100.0,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """NEL = focal_weight * focal + dice_weight * dice; logits (B, K, H, W), target (B, H, W), valid (B, K).

    num_masks = `mask_count` of the present (image, class) pairs.
    """
    targets = one_hot_targets(target, logits.shape[1])
    present = (targets.flatten(2).sum(-1) > 0) & valid
    num_masks = mask_count(present)
    return focal_weight * sigmoid_focal_loss(logits, targets, valid.float(), num_masks) + dice_weight * dice_loss(
        logits, targets, present.float(), num_masks
    )


def group_cross_entropy(logits: torch.Tensor, target: torch.Tensor, num_seen: int) -> torch.Tensor:
    """Mean CE over the seen-labelled pixels + mean CE over the latent pixels.

    logits (B, C_s + U, H, W); target (B, H, W): seen index < num_seen, latent slot >= num_seen, or
    IGNORE_INDEX (at least one pixel labelled). Mining labels most unannotated pixels latent (the background
    too), so one mean over all of them would shrink the seen supervision by the background's share; here each
    seen pixel weighs what it does without the latent term, and with no latent pixel this is the plain mean.
    """
    labelled = target != IGNORE_INDEX
    latent = labelled & (target >= num_seen)
    if not latent.any():  # the plain mean itself, so arms without the latent term train exactly as before
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
    seen = labelled & ~latent
    latent_mean = per_pixel[latent].mean()
    return per_pixel[seen].mean() + latent_mean if seen.any() else latent_mean
