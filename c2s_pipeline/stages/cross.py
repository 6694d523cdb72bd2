"""Stages `evaluate --dataset` and `vocab --dataset`: another dataset's vocabulary, whose names CLIP may embed
(c2s_pipeline.engines.cross does the work)."""

from c2s_pipeline.engines.cross import evaluate_run_on as run
from c2s_pipeline.engines.cross import evaluate_teacher_on as run_teacher
from c2s_pipeline.engines.cross import write_target_vocab

__all__ = ["run", "run_teacher", "write_target_vocab"]
