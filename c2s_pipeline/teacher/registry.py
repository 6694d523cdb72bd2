"""The project's own open_clip model configs (tiny test model, world teacher), and the teacher's identity
without loading it (its weights' and config's digests, which a store's fingerprint covers).

open_clip is imported only by `register_model_configs`: the digests are read in processes (training) that never
import open_clip.
"""

from __future__ import annotations

import json
from pathlib import Path

from c2s_pipeline.cache.fingerprint import file_sha256, json_digest

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> list[str]:
    """Make `c2s-*` configs known to open_clip.create_model; safe to call repeatedly."""
    import open_clip

    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    if any(name not in open_clip.list_models() for name in names):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return names


def weights_digest(model_name: str, pretrained: str | None) -> str:
    """Identity of the teacher weights without loading them: a checkpoint's sha256, or model:tag."""
    if not pretrained:
        return "random-init"
    path = Path(pretrained)
    if not path.is_file():
        return f"{model_name}:{pretrained}"
    return file_sha256(path)


def model_config_digest(model_name: str) -> str | None:
    """Identity of the teacher's architecture when this project defines it: 16 hex chars over the canonical JSON
    of its own config (`c2s-*`, which can change with this code while their weight names stay the same,
    as a change of pooling does). None for open_clip's configs, fixed by its pinned version: their stores keep
    their addresses."""
    path = MODEL_CONFIG_DIR / f"{model_name}.json"
    if not path.is_file():
        return None
    return json_digest(json.loads(path.read_text()))
