"""Registers the project's own open_clip model configs (tiny test model, world teacher).

open_clip is imported only by `register_model_configs`: the store's fingerprint reads `MODEL_CONFIG_DIR`
in processes (training) that never import open_clip.
"""
from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> list[str]:
    """Make `c2s-*` configs known to open_clip.create_model; safe to call repeatedly."""
    import open_clip

    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    if any(name not in open_clip.list_models() for name in names):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return names
