"""The learning-rate schedule of both world pretrainings (the teacher's CLIP and the student's encoder)."""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, total: int, base_lr: float, warmup: int = 0) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
