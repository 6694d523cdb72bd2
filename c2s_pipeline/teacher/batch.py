"""The teacher's computation for one batch of images: everything a store keeps of them."""

from __future__ import annotations

import numpy as np
import torch

from c2s_pipeline.cache.schema import TeacherRecord
from c2s_pipeline.config import Params
from c2s_pipeline.data.transforms import view_windows
from c2s_pipeline.teacher.clip import FrozenCLIP
from c2s_pipeline.teacher.mining import mine_pseudo_mask, region_crops


def teach_batch(
    clip: FrozenCLIP,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: Params,
    crop_size: int,
    bank_views: torch.Tensor | None = None,
    view_boxes: torch.Tensor | None = None,
) -> list[TeacherRecord]:
    """Teacher outputs for one batch: one CLIP pass over the images, one over all their region crops.

    Global CLS: of the whole S x S image and its corner crops, or, given `bank_views` (B, V, S, S, 3) uint8
    with their `view_boxes` (B, V, 6), of each bank view exactly as the student is shown it: padded at the
    bottom and right with zeros after normalisation (MMSeg's Normalize then Pad).
    """
    size = params.data.image_size
    x = clip.preprocess(images, size)  # (B, 3, S, S)
    out = clip.encode_images(x)
    if bank_views is None:
        views = view_windows(size, params.teacher.view_crops)
        global_cls = torch.stack(
            [out.global_cls] + [clip.encode_crops(x[..., y : y + s, x0 : x0 + s]) for y, x0, s in views[1:]], 1
        )  # (B, V, D)
    else:
        assert view_boxes is not None, "bank views come with their boxes"
        b, v = bank_views.shape[:2]
        shown = clip.preprocess(bank_views.flatten(0, 1), size) * pad_mask(view_boxes.flatten(0, 1), size).to(
            x.device
        )  # (B V, 3, S, S)
        global_cls = clip.encode_crops(shown).view(b, v, -1)  # (B, V, D)
    mined = [
        mine_pseudo_mask(out.dense_tokens[b], labels[b].numpy(), params.mining, params.teacher.max_regions)
        for b in range(len(images))
    ]
    crops = [
        region_crops(x[b], torch.from_numpy(m.pseudo_mask), m.region_count, crop_size) for b, m in enumerate(mined)
    ]
    counts = [m.region_count for m in mined]
    local = clip.encode_crops(torch.cat(crops)) if sum(counts) else None  # (sum n, D)
    records, start = [], 0
    for b, m in enumerate(mined):
        slots = np.zeros((params.teacher.max_regions, clip.embed_dim), dtype=np.float16)
        if m.region_count and local is not None:
            slots[: m.region_count] = local[start : start + m.region_count].cpu().numpy()
        start += m.region_count
        records.append(
            TeacherRecord(
                global_cls=global_cls[b].cpu().numpy().astype(np.float16),
                view_boxes=None if view_boxes is None else view_boxes[b].numpy().astype(np.int32),
                dense_tokens=out.dense_tokens[b].cpu().numpy().astype(np.float16),
                pseudo_mask=m.pseudo_mask,
                region_class=m.region_class,
                local_cls=slots,
                region_count=m.region_count,
            )
        )
    return records


def pad_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 6) view boxes -> (N, 1, S, S) float: 1 on a view's own pixels, 0 on its padding."""
    rows = torch.arange(size)[None, :, None] < boxes[:, 4, None, None]
    cols = torch.arange(size)[None, None, :] < boxes[:, 5, None, None]
    return (rows & cols)[:, None].float()
