"""`c2s cache ls` and `c2s cache verify`: what stores exist, and whether a store is sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2s_pipeline.cache.backends import H5Backend
from c2s_pipeline.cache.schema import NO_REGION
from c2s_pipeline.cache.store import CacheError, CacheReader


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_stores(cache_dir: str | Path) -> list[dict]:
    """One row per store under cache_dir (fingerprint, size, completeness)."""
    if not Path(cache_dir).is_dir():
        raise CacheError(f"cache folder {cache_dir} not found; run `c2s precompute` first, or pass --cache-dir")
    rows = []
    folder = Path(cache_dir)
    unpublished = [p.with_suffix("") for p in folder.glob("*.h5.partial") if not p.with_suffix("").exists()]
    for path in sorted(folder.glob("*.zarr")) + sorted([*folder.glob("*.h5"), *unpublished]):
        size = _size(H5Backend.located(path) if path.suffix == ".h5" else path)
        row = {"path": str(path), "size_mb": round(size / 2**20, 2)}
        try:
            reader = CacheReader(path, seen_only=True, require_complete=False)
        except CacheError as err:
            rows.append({**row, "status": f"unusable: {err}"})
            continue
        m = reader.manifest
        done = sum(reader.is_done(i) for i in range(len(reader)))
        rows.append(
            {
                **row,
                "dataset": m.get("dataset"),
                "split": m.get("split"),
                "fingerprint": reader.fingerprint,
                "format": reader.format,
                "images_done": done,
                "images": len(reader),
                "bytes_per_image": round(size / max(done, 1)),
                "dense_tokens": reader.shape.dense_tokens,
                "status": "complete" if done == len(reader) else "incomplete",
                "created": m.get("created"),
            }
        )
    return rows


def verify_store(path) -> dict:
    """Read every finished image back and check shapes, ranges and finiteness."""
    reader = CacheReader(path, seen_only=False, require_complete=False)
    s, problems, done = reader.shape, [], 0
    text = reader.text_embeddings()
    if not np.isfinite(text).all():
        problems.append("text_embeddings contain non-finite values")
    elif not _unit(text):
        problems.append("text_embeddings: a row is not of unit norm (a missing chunk reads back as zeros)")
    for i in range(len(reader)):
        if not reader.is_done(i):
            continue
        done += 1
        try:
            rec = reader.read(i, dense=s.dense_tokens)
        except Exception as err:  # noqa: BLE001 - a damaged chunk fails in the codec, zarr or h5py: listed
            problems.append(f"image {i}: unreadable ({err.__class__.__name__}); recompute it or the store")
            continue
        checks = {
            "global_cls shape": rec.global_cls.shape == (s.num_views, s.embed_dim),
            "dense_tokens shape": not s.dense_tokens
            or (rec.dense_tokens is not None and rec.dense_tokens.shape == (*s.grid, s.embed_dim)),
            "pseudo_mask shape": rec.pseudo_mask.shape == (s.mask_size, s.mask_size),
            "region_count <= max_regions": 0 <= rec.region_count <= s.max_regions,
            "pseudo_mask ids < region_count": bool(
                np.all((rec.pseudo_mask < rec.region_count) | (rec.pseudo_mask == NO_REGION))
            ),
            "view_boxes fit": not s.view_boxes
            or (rec.view_boxes is not None and _boxes_fit(rec.view_boxes, s.mask_size)),
            "global_cls of unit norm": _unit(rec.global_cls),
            "local_cls of unit norm": _unit(rec.local_cls[: rec.region_count]),
            "finite values": all(
                np.isfinite(a.astype(np.float32)).all()
                for a in (rec.global_cls, rec.dense_tokens, rec.local_cls)
                if a is not None
            ),
        }
        problems += [f"image {i}: {name} failed" for name, ok in checks.items() if not ok]
    return {
        "path": str(path),
        "fingerprint": reader.fingerprint,
        "images": len(reader),
        "images_done": done,
        "problems": problems,
    }


def _boxes_fit(boxes: np.ndarray, size: int) -> bool:
    """Every bank view's window lies inside its resized image and fits the S x S input."""
    rh, rw, top, left, ch, cw = np.asarray(boxes, np.int64).T
    return bool(
        np.all(
            (top >= 0)
            & (left >= 0)
            & (ch > 0)
            & (cw > 0)
            & (ch <= size)
            & (cw <= size)
            & (top + ch <= rh)
            & (left + cw <= rw)
        )
    )


def _unit(rows: np.ndarray) -> bool:
    """Every finite row L2-normalised, within float16's precision (a chunk lost from the store reads back as
    zeros); rows with NaN or infinity are the finiteness check's to report."""
    norms = np.linalg.norm(np.asarray(rows, np.float32).reshape(-1, rows.shape[-1]), axis=1)
    norms = norms[np.isfinite(norms)]
    return bool(np.all(np.abs(norms - 1) < 1e-2))
