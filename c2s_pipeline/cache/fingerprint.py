"""The teacher store's content address: a hash of everything that changes the teacher's outputs.

Student, loss, train and eval parameters never enter it, so every training experiment reuses a store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from c2s_pipeline.cache.schema import SCHEMA_VERSION


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(obj) -> str:
    """16 hex chars of sha256 over the canonical JSON of obj."""
    return _sha256(json.dumps(obj, sort_keys=True).encode())[:16]


def teacher_fingerprint(inputs: dict) -> str:
    """16 hex chars of sha256 over canonical JSON of the inputs."""
    return _sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode())[:16]


def file_list_digest(ids: list[str]) -> str:
    return _sha256("\n".join(ids).encode())[:16]


def data_digest(paths, mode: str = "stat") -> str:
    """16 hex chars over the data a store was computed from (data.digest).

    stat (the default): each file's name, size and mtime_ns. Cheap (one stat per file, no reads: 2 x 118k for
    COCO-Stuff), and it changes when any image or label is rewritten, replaced, added or removed. A rewrite
    that keeps both size and mtime_ns is not seen; moving or copying the dataset with its mtimes kept (cp -p,
    rsync -t) keeps the digest. content: each file's name and the sha256 of every byte: sees any change, moves
    and copies keep it, at the cost of reading the whole split once per command that locates its store (about
    20 GB for COCO-Stuff's train split). The two modes address different stores.
    """
    sha = hashlib.sha256(b"content\n" if mode == "content" else b"")
    for path in paths:
        path = Path(path)
        try:
            if mode == "content":
                sha.update(f"{path.name}\t{file_sha256(path)}\n".encode())
            else:
                st = path.stat()
                sha.update(f"{path.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            sha.update(f"{path.name}\tmissing\n".encode())
    return sha.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (checkpoints may be GBs)."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def fingerprint_inputs(
    *,
    dataset: str,
    split: str,
    ids: list[str],
    data: str,
    clip_model: str,
    model_config: str | None,
    weights_digest: str,
    image_size: int,
    dense_mode: str,
    crop_size: int,
    templates: str | list[str],
    mining,
    max_regions: int,
    unseen: list[int],
    view_crops: tuple[float, ...],
    dense_tokens: bool,
    view_bank: dict | None = None,
) -> dict:
    """Everything the teacher's outputs depend on, as a JSON-able dict (view_bank: the bank's recipe, for a
    store of teacher.views bank)."""
    is_record = dataclasses.is_dataclass(mining) and not isinstance(mining, type)
    mining_dict = dataclasses.asdict(mining) if is_record else dict(mining)
    inputs = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "num_images": len(ids),
        "file_list": file_list_digest(ids),
        "data": data,
        "unseen": sorted(int(u) for u in unseen),
        "clip_model": clip_model,
        "weights": weights_digest,
        "image_size": image_size,
        "dense_mode": dense_mode,
        "crop_size": crop_size,
        "templates": templates,
        "mining": json.loads(json.dumps(mining_dict)),
        "max_regions": max_regions,
        "view_crops": [float(f) for f in view_crops],
        "dense_tokens": bool(dense_tokens),
    }
    if view_bank is not None:  # only then: corner-view stores keep their fingerprints
        inputs["view_bank"] = json.loads(json.dumps(view_bank))
    if model_config is not None:  # only then: stores of open_clip's own models keep their fingerprints
        inputs["model_config"] = model_config
    return inputs
