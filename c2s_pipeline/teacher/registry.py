"""Registers the project's own open_clip model configs (tiny test model, world teacher)."""
from __future__ import annotations

from pathlib import Path

import open_clip

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> list[str]:
    """Make `c2s-*` configs known to open_clip.create_model; safe to call repeatedly."""
    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    if any(name not in open_clip.list_models() for name in names):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return names
