"""Stage `world pretrain-encoder`: the student's encoder trained to name the world's caption photos, the
embedded default's stand-in for ImageNet weights (`student.encoder_weights` takes the file)."""
from __future__ import annotations

import logging
from pathlib import Path

from c2s_pipeline.config import Params
from c2s_pipeline.world.encoder import pretrain_encoder
from stages.common import resolve_device, seed_everything

log = logging.getLogger(__name__)


def run(params: Params, world_dir: str | Path, out_path: str | Path) -> Path:
    """Train `student.encoder` as a classifier of the caption photos; writes its state_dict."""
    seed_everything(params.encoder_pretrain.seed)
    device = resolve_device(params.train.device)
    metrics = pretrain_encoder(Path(world_dir), Path(out_path), params.student.encoder, params.encoder_pretrain,
                               device=str(device))
    log.info("student encoder written to %s: %s", out_path, metrics)
    return Path(out_path)
