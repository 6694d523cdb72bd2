"""Stage `world pretrain-encoder`: the student's encoder trained to name the world's caption photos, the
embedded default's stand-in for ImageNet weights (c2s_pipeline.world.encoder_pretrain does the work)."""

from c2s_pipeline.world.encoder_pretrain import run_pretrain_encoder as run

__all__ = ["run"]
