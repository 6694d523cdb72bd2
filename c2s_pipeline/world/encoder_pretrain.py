"""The world's stand-in for ImageNet weights: the student's encoder trained to name the caption photos.

In the paper's setting the student starts from ImageNet weights, and ImageNet holds VOC's unseen classes
too (sheep as 'ram', sofa as 'studio couch', ...). Here the student's smp encoder learns the same kind of
thing, image classification over the world's classes, from the caption photos that pretrain the teacher.
It never reads a segmentation label: the trainer's seen-only gate is untouched.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from c2s_pipeline.config import EncoderPretrainConfig, Params
from c2s_pipeline.data.transforms import clip_normalise
from c2s_pipeline.files import replacing, write_text
from c2s_pipeline.runtime import resolve_device, seed_everything
from c2s_pipeline.world.generator import CLASS_NAMES, caption_rows
from c2s_pipeline.world.schedule import warmup_cosine_lr

log = logging.getLogger(__name__)


def load_caption_photos(world_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every caption photo as uint8 (N, 3, S, S), a quarter of float32's memory, and its class (N,)."""
    rows = caption_rows(world_dir)
    photos = np.stack([np.asarray(Image.open(world_dir / r["image"]).convert("RGB")) for r in rows])
    return torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous(), torch.tensor([r["classes"][0] for r in rows])


def photo_batch(photos: torch.Tensor, idx: torch.Tensor | slice) -> torch.Tensor:
    """The photos at idx, normalised as the student sees images: (B, 3, S, S)."""
    return clip_normalise(photos[idx])


def classify(encoder: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Class logits from the encoder's deepest feature map, averaged over positions."""
    return head(encoder(x)[-1].mean((2, 3)))


def pretrain_encoder(
    world_dir: str | Path, out_path: str | Path, encoder_name: str, cfg: EncoderPretrainConfig, device: str = "cpu"
) -> dict:
    """Train smp's `encoder_name` from scratch as a classifier of the caption photos (AdamW, cosine decay,
    random batches and flips); writes the encoder's state_dict, for `student.encoder_weights`."""
    world_dir, out_path = Path(world_dir), Path(out_path)
    torch.manual_seed(cfg.seed)
    photos, labels = load_caption_photos(world_dir)
    encoder = smp.encoders.get_encoder(encoder_name, in_channels=3, depth=5, weights=None).to(device).train()
    head = torch.nn.Linear(encoder.out_channels[-1], len(CLASS_NAMES)).to(device)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretrain student encoder", unit="step")
    for step in bar:
        idx = torch.randint(0, len(photos), (cfg.batch_size,), generator=gen)
        x = photo_batch(photos, idx)
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg.steps, cfg.lr)
        loss = F.cross_entropy(classify(encoder, head, x.to(device)), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 0:
            first_loss = loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    encoder.eval()
    with torch.no_grad():
        hits = sum(
            int(
                (
                    classify(encoder, head, photo_batch(photos, slice(i, i + 100)).to(device)).argmax(1).cpu()
                    == labels[i : i + 100]
                ).sum()
            )
            for i in range(0, len(photos), 100)
        )
    metrics = {
        "encoder": encoder_name,
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - start, 1),
        "first_loss": first_loss,
        "last_loss": loss.item(),
        "caption_top1": 100 * hits / len(photos),
    }
    with replacing(out_path) as tmp:
        torch.save(encoder.state_dict(), tmp)
    write_text(out_path.with_suffix(".json"), json.dumps(metrics, indent=2))
    log.info("student encoder pretraining: %s", metrics)
    return metrics


def run_pretrain_encoder(params: Params, world_dir: str | Path, out_path: str | Path) -> Path:
    """Train `student.encoder` as a classifier of the caption photos; writes its state_dict."""
    seed_everything(params.encoder_pretrain.seed)
    device = resolve_device(params.train.device)
    metrics = pretrain_encoder(
        Path(world_dir), Path(out_path), params.student.encoder, params.encoder_pretrain, device=str(device)
    )
    log.info("student encoder written to %s: %s", out_path, metrics)
    return Path(out_path)
