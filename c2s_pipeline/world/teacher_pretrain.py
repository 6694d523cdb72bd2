"""Pretrain the world's small CLIP with open_clip itself (its config registry, tokenizer and ClipLoss).

Captions name every object, unseen classes included: like real CLIP, the teacher has seen every
concept with text; only the segmentation labels of unseen classes are missing downstream.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from c2s_pipeline.config import ConfigError, Params, TeacherPretrainConfig
from c2s_pipeline.data.base import IGNORE_INDEX
from c2s_pipeline.data.prompts import SINGLE_TEMPLATE
from c2s_pipeline.data.registry import build_dataset
from c2s_pipeline.data.transforms import clip_normalise
from c2s_pipeline.files import replacing, write_text
from c2s_pipeline.runtime import resolve_device, seed_everything
from c2s_pipeline.teacher.registry import register_model_configs
from c2s_pipeline.world.generator import caption_rows
from c2s_pipeline.world.schedule import warmup_cosine_lr

log = logging.getLogger(__name__)


def _load_captions(world_dir: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """All caption images as one (N, 3, size, size) uint8 tensor, and their captions."""
    rows = caption_rows(world_dir)
    bilinear = Image.Resampling.BILINEAR
    images = [
        np.asarray(Image.open(world_dir / r["image"]).convert("RGB").resize((size, size), bilinear)) for r in rows
    ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), [r["caption"] for r in rows]


CROP_SIDE = (0.6, 1.0)  # random crop side as a fraction of the photo's, then resized back (RandomResizedCrop)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random square crop per photo, resized back, then flips and 90-degree turns of the batch.

    Crops show objects at more scales and as tight as a segment's bounding box; shapes keep their names
    under flips and turns.
    """
    b = x.shape[0]
    side = torch.empty(b).uniform_(*CROP_SIDE, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - side)[:, None]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-2)
    return torch.rot90(x, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))


def distinct_caption_batches(captions: list[str], batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of index batches in which no caption repeats.

    ClipLoss takes every other caption of a batch as a negative: an identical caption would be a false
    negative (a world has few distinct captions, web data almost none). Items that do not fit a batch
    of distinct captions wait for the next batch; leftovers at the end of the epoch are dropped.
    """
    batches: list[torch.Tensor] = []
    current: list[int] = []
    names: set[str] = set()
    waiting: list[int] = []
    for i in torch.randperm(len(captions), generator=gen).tolist():
        for j in [*waiting, i]:
            if captions[j] not in names and len(current) < batch_size:
                current.append(j)
                names.add(captions[j])
                if j in waiting:
                    waiting.remove(j)
            elif j == i:
                waiting.append(i)
            if len(current) == batch_size:
                batches.append(torch.tensor(current))
                current, names = [], set()
    return batches


@torch.no_grad()
def contrastive_loss(model, loss_fn, images: torch.Tensor, tokens: torch.Tensor) -> float:
    model.eval()
    out = model(clip_normalise(images), tokens)
    model.train()
    return float(loss_fn(out["image_features"], out["text_features"], out["logit_scale"]))


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, world_dir: Path, size: int, device) -> dict:
    """Top-1 image-level accuracy on the held-out val images: the class of the largest object."""
    model.eval()
    # The default unseen split on purpose: the teacher never depends on world.unseen (one teacher serves
    # every split); `c2s world diagnose` reports the split of the params.
    ds = build_dataset("world", world_dir, "val")
    names = list(ds.spec.class_names)
    text = F.normalize(model.encode_text(tokenizer([SINGLE_TEMPLATE[0].format(c) for c in names]).to(device)), dim=-1)
    hits: dict[str, list[float]] = {"seen": [], "unseen": []}
    for i in range(len(ds)):
        sample = ds[i]
        present, counts = np.unique(sample.label[sample.label != IGNORE_INDEX], return_counts=True)
        if not len(present):
            continue
        target = int(present[np.argmax(counts)])
        image = torch.from_numpy(
            np.array(Image.fromarray(sample.image).resize((size, size), Image.Resampling.BILINEAR))
        )
        feat = F.normalize(model.encode_image(clip_normalise(image.permute(2, 0, 1)[None].to(device))), dim=-1)
        pred = int((feat @ text.T).argmax())
        hits["unseen" if target in ds.spec.unseen else "seen"].append(pred == target)
    model.train()
    return {f"zero_shot_top1_{k}": float(np.mean(v)) * 100 if v else float("nan") for k, v in hits.items()}


def make_optimizer(model: torch.nn.Module, cfg: TeacherPretrainConfig) -> torch.optim.AdamW:
    """AdamW with the batched (foreach) kernels: on CPU torch defaults to a per-tensor loop, which gives the
    same numbers (tests/test_world.py) more slowly. One parameter group: `train_clip` repeats its decay."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


class CaptionTokenRows:
    """Swaps a CLIP's token embedding for the rows that `tokens` use; the same teacher, bit for bit.

    The table has a row for each of open_clip's 49,408 tokens (83 % of the world CLIP's weights) and a
    world's captions use a few dozen, yet AdamW reads and writes every row at every step (without that, a
    world pretraining step takes 0.70 of the time: benchmarks/pretrain_step.py). A row no caption uses gets
    a zero gradient, so AdamW's only change to it is the decoupled decay p *= 1 - lr * wd, which
    `decay_table` applies with the same float; the used rows train as an ordinary Embedding. Ids are
    renumbered in their order (`remapped`), so open_clip's argmax text pooling finds the same end-of-text
    token. `restore` writes the trained rows into the full table and puts it back.
    """

    def __init__(self, model: Any, tokens: torch.Tensor):  # an open_clip CLIP
        if getattr(model, "text_pool_type", None) != "argmax" or not hasattr(model, "token_embedding"):
            raise ValueError(
                "training only the caption token rows needs an open_clip CLIP with argmax text "
                "pooling (the world's c2s-* configs)"
            )
        self.model, self.full = model, model.token_embedding
        self.used, self.remapped = torch.unique(tokens, return_inverse=True)  # sorted: order kept
        model.token_embedding = torch.nn.Embedding.from_pretrained(self.full.weight.detach()[self.used], freeze=False)

    @torch.no_grad()
    def decay_table(self, factor: float) -> None:
        self.full.weight.mul_(factor)  # the used rows too: `restore` overwrites them

    @torch.no_grad()
    def restore(self) -> None:
        self.full.weight[self.used] = self.model.token_embedding.weight
        self.model.token_embedding = self.full


def train_clip(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    batches: list[torch.Tensor],
    cfg: TeacherPretrainConfig,
    gen: torch.Generator,
    device,
    bar: tqdm | None = None,
) -> None:
    """AdamW with ClipLoss: images (N, 3, S, S) uint8 and caption tokens (N, L), one step per index batch,
    augmented by `gen`. Only the caption token rows train (CaptionTokenRows); the full table is back on
    return, also after an error."""
    loss_fn = open_clip.ClipLoss()
    rows = CaptionTokenRows(model, tokens)
    try:
        opt = make_optimizer(model, cfg)
        for step, idx in enumerate(batches):
            lr = warmup_cosine_lr(step, len(batches), cfg.lr, cfg.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            out = model(clip_normalise(_augment(images[idx], gen).to(device)), rows.remapped[idx].to(device))
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.decay_table(1 - lr * cfg.weight_decay)
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    finally:
        rows.restore()


def pretrain_teacher(
    world_dir: str | Path,
    out_path: str | Path,
    cfg: TeacherPretrainConfig,
    model_name: str = "c2s-world-vit",
    device: str = "cpu",
) -> dict:
    """Train CLIP from scratch on the world's captions; writes an ordinary open_clip state_dict."""
    world_dir, out_path = Path(world_dir), Path(out_path)
    register_model_configs()
    torch.manual_seed(cfg.seed)
    model = open_clip.create_model(model_name, pretrained=None, output_dict=True).to(device).train()
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    images, captions = _load_captions(world_dir, size)
    tokens = tokenizer(captions)
    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = [b for _ in range(cfg.epochs) for b in distinct_caption_batches(captions, cfg.batch_size, gen)]
    total = len(batches)
    if not total:
        raise ConfigError(
            f"teacher_pretrain.batch_size {cfg.batch_size} is more than the {len(set(captions))} "
            "distinct captions of this world, and a batch never repeats a caption; lower it"
        )
    probe = torch.arange(min(256, len(captions)))
    loss_before = contrastive_loss(model, loss_fn, images[probe].to(device), tokens[probe].to(device))
    start = time.perf_counter()
    bar = tqdm(total=total, desc="pretrain teacher", unit="step")
    train_clip(model, images, tokens, batches, cfg, gen, device, bar)
    bar.close()
    metrics = {
        "model": model_name,
        "model_config": open_clip.get_model_config(model_name),
        "loss_before": loss_before,
        "loss_after": contrastive_loss(model, loss_fn, images[probe].to(device), tokens[probe].to(device)),
        "steps": total,
        "seconds": round(time.perf_counter() - start, 1),
        **zero_shot_accuracy(model, tokenizer, world_dir, size, device),
    }
    with replacing(out_path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_text(out_path.with_suffix(".json"), json.dumps(metrics, indent=2))
    log.info("teacher pretraining: %s", metrics)
    return metrics


def run_pretrain(params: Params, world_dir: str | Path, out_path: str | Path) -> Path:
    """Pretrain the world's CLIP with open_clip; writes an ordinary open_clip checkpoint."""
    seed_everything(params.teacher_pretrain.seed)
    device = resolve_device(params.teacher.device)
    metrics = pretrain_teacher(
        Path(world_dir),
        Path(out_path),
        params.teacher_pretrain,
        model_name=params.teacher.clip_model,
        device=str(device),
    )
    log.info("teacher written to %s: %s", out_path, metrics)
    return Path(out_path)
