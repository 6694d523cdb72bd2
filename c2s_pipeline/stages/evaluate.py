"""Stage `evaluate`: sIoU / uIoU / hIoU of a run, or of CLIP's own dense map, no CLIP loaded
(c2s_pipeline.engines.evaluate does the work)."""

from c2s_pipeline.engines.evaluate import EvaluationError
from c2s_pipeline.engines.evaluate import evaluate_clip_dense as run_clip_baseline
from c2s_pipeline.engines.evaluate import evaluate_run as run

__all__ = ["EvaluationError", "run", "run_clip_baseline"]
