"""Stage `precompute`: the teacher store of one split (c2s_pipeline.engines.precompute does the work)."""

from c2s_pipeline.engines.precompute import STORE_POINTER, shard_indices
from c2s_pipeline.engines.precompute import build_store as run

__all__ = ["STORE_POINTER", "run", "shard_indices"]
