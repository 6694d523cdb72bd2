"""Which teacher store belongs to a run: what enters a store's fingerprint, where that store lives, opening it.

The identity of a store is every teacher setting its outputs depend on plus a digest of the split's files
(`fingerprint.data_digest`); `locate_store` addresses the store by it, `open_store` refuses any other.
"""

from __future__ import annotations

from pathlib import Path

from c2s_pipeline.cache.fingerprint import data_digest, fingerprint_inputs, teacher_fingerprint
from c2s_pipeline.cache.store import CacheReader, StoreIdentity, store_path
from c2s_pipeline.config import Params
from c2s_pipeline.data.prompts import as_json
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.teacher.registry import model_config_digest, weights_digest


def stores_dense_tokens(params: Params, split: str) -> bool:
    """teacher.dense_tokens: `eval` keeps them in every split's store but data.train_split's, `all` everywhere."""
    return params.teacher.dense_tokens == "all" or split != params.data.train_split


def teacher_inputs(params: Params, split: str, dataset) -> dict:
    """The fingerprint inputs of the teacher store for `split` under `params`, computed from `dataset`'s files."""
    t, d = params.teacher, params.data
    files = [p for i in range(len(dataset)) for p in (dataset.image_path(i), dataset.label_path(i))]
    return fingerprint_inputs(
        dataset=d.dataset,
        split=split,
        ids=list(dataset.ids),
        data=data_digest(files, d.digest),
        clip_model=t.clip_model,
        model_config=model_config_digest(t.clip_model),
        weights_digest=weights_digest(t.clip_model, t.pretrained),
        image_size=d.image_size,
        dense_mode=t.dense_mode,
        crop_size=t.crop_size,
        templates=as_json(dataset.spec.prompt_set(t.templates)),
        mining=params.mining,
        max_regions=t.max_regions,
        unseen=list(dataset.spec.unseen),
        view_crops=t.view_crops,
        dense_tokens=stores_dense_tokens(params, split),
        view_bank=view_bank_recipe(params, split),
    )


def view_bank_recipe(params: Params, split: str) -> dict | None:
    """What a bank store's views are drawn from (its training split only; other splits keep the corners), or
    None for corner views."""
    t = params.teacher
    if not uses_view_bank(params, split):
        return None
    return {
        "count": t.view_count,
        "scale": list(t.view_scale),
        "ratio": list(t.view_ratio),
        "cat_max_ratio": t.cat_max_ratio,
    }


def uses_view_bank(params: Params, split: str) -> bool:
    """Bank views are drawn for the training split; evaluation splits need no student views at all."""
    return params.teacher.views == "bank" and split == params.data.train_split


def locate_store(params: Params, split: str, cache_dir: str | Path, dataset=None) -> tuple[Path, StoreIdentity]:
    """(path, identity) of the store that `c2s precompute` writes for these params and split.

    The identity is what the store must have been computed under: teacher settings and the split's files
    (those of `dataset` when the caller has built it already).
    """
    inputs = teacher_inputs(params, split, dataset or dataset_from_params(params, split))
    fingerprint = teacher_fingerprint(inputs)
    identity = StoreIdentity(fingerprint, inputs)
    return Path(store_path(cache_dir, params.data.dataset, split, fingerprint, params.teacher.store_format)), identity


def open_store(params: Params, split: str, *, cache_dir: str | Path, cache=None, seen_only: bool = True) -> CacheReader:
    """The store of `split` under `params`, or the one at `cache`: either is refused unless it was computed
    under these teacher settings, this split and its zero-shot classes, from these files."""
    path, identity = locate_store(params, split, cache_dir)
    return CacheReader(cache or path, expect=identity, seen_only=seen_only)
