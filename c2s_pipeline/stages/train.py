"""Stage `train`: a student from the train split's teacher store, never importing open_clip
(c2s_pipeline.engines.train does the work)."""

from c2s_pipeline.engines.train import baseline_params
from c2s_pipeline.engines.train import train_student as run

__all__ = ["baseline_params", "run"]
