"""Stages `world generate` and `world pretrain-teacher`: the embedded default and its CLIP
(c2s_pipeline.world does the work)."""

from c2s_pipeline.world.generator import WorldError, run_generate
from c2s_pipeline.world.teacher_pretrain import run_pretrain

__all__ = ["WorldError", "run_generate", "run_pretrain"]
