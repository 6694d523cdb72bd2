"""Stages `world generate` and `world pretrain-teacher`: the embedded default and its CLIP."""
from __future__ import annotations

import logging
from pathlib import Path

from c2s_pipeline.config import Params
from c2s_pipeline.world.generator import WORLD_STYLES, generate_world, generate_world_b
from c2s_pipeline.world.pretrain import pretrain_teacher
from stages.common import resolve_device, seed_everything

log = logging.getLogger(__name__)


class WorldError(ValueError):
    """A world that cannot be generated as asked; what to do."""


def run_generate(params: Params, out_dir: str | Path, style: str = "a") -> Path:
    """Write the generated world in the VOC layout under `out_dir`: world A (the embedded default) or world B
    (its cross-dataset target)."""
    if style not in WORLD_STYLES:
        raise WorldError(f"unknown world style {style!r}; choose one of {', '.join(WORLD_STYLES)}")
    summary = (generate_world if style == "a" else generate_world_b)(Path(out_dir), params.world)
    log.info("world written to %s: %s", out_dir, {k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return Path(out_dir)


def run_pretrain(params: Params, world_dir: str | Path, out_path: str | Path) -> Path:
    """Pretrain the world's CLIP with open_clip; writes an ordinary open_clip checkpoint."""
    seed_everything(params.pretrain.seed)
    device = resolve_device(params.teacher.device)
    metrics = pretrain_teacher(Path(world_dir), Path(out_path), params.pretrain,
                               model_name=params.teacher.clip_model, device=str(device))
    log.info("teacher written to %s: %s", out_path, metrics)
    return Path(out_path)
