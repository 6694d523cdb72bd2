"""Build a teacher store: the frozen CLIP once per image of a split into the content-addressed store."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from c2s_pipeline import __version__
from c2s_pipeline.cache.backends import is_url
from c2s_pipeline.cache.schema import CacheShape
from c2s_pipeline.cache.store import CacheWriter, StoreIdentity, is_complete, publish_complete, store_lock
from c2s_pipeline.config import Params, TeacherConfig, to_dict
from c2s_pipeline.data.base import as_in_main_process
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.data.transforms import bank_view, draw_bank_views, pad_to, resize_pair, view_windows
from c2s_pipeline.files import write_text
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.teacher.batch import teach_batch
from c2s_pipeline.teacher.clip import load_clip
from c2s_pipeline.teacher.identity import locate_store, stores_dense_tokens, uses_view_bank

log = logging.getLogger(__name__)

# Beside the stores: which store holds a split now, under a name that does not change with the settings.
# dvc.yaml's train stages depend on it, not on the whole cache folder.
STORE_POINTER = "{dataset}-{split}.json"


class _Resized(Dataset):
    """Decodes and resizes images in DataLoader workers; labels are seen-only (the inductive gate).

    With a view bank (`bank`: the teacher section) each item also carries its drawn views, padded to S x S,
    and their boxes; the views are drawn from the seen-only label, so the bank never reads unseen labels.
    """

    def __init__(self, dataset, indices: list[int], size: int, bank: TeacherConfig | None = None):
        self.dataset, self.indices, self.size, self.bank = dataset, indices, size, bank

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        sample = self.dataset[i]
        image, label = resize_pair(sample.image, sample.label, self.size)
        item = (i, torch.from_numpy(np.array(image)), torch.from_numpy(np.array(label)))
        if self.bank is None:
            return item
        t = self.bank
        boxes = draw_bank_views(
            sample.label,
            self.dataset.ids[i],
            count=t.view_count,
            crop=self.size,
            scale=t.view_scale,
            ratio=t.view_ratio,
            cat_max_ratio=t.cat_max_ratio,
        )
        views = np.stack([pad_to(bank_view(sample.image, box=box)[0], self.size, 0) for box in boxes])
        return (*item, torch.from_numpy(views), torch.from_numpy(boxes))


def shard_indices(todo: list[int], rank: int, world_size: int) -> list[int]:
    """Deterministic disjoint slice of image indices for one rank."""
    return [i for i in todo if i % world_size == rank]


def build_store(
    params: Params,
    *,
    split: str,
    cache_dir: str | Path,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
    limit: int | None = None,
) -> Path:
    """Precompute the teacher store for `split`; resumes a store that a killed run left behind.

    A complete store of these settings and files is left as it is (nothing is written, CLIP is not loaded);
    changed files address another store (the data digest is part of the fingerprint). Rank 0 holds the store's
    lock while writing, so a second precompute of the same store is refused. rank/world_size shard the images
    (torchrun); limit computes only the first N missing (benchmarks).
    """
    dataset = dataset_from_params(params, split, seen_only=True)
    path, identity = locate_store(params, split, cache_dir, dataset)
    if is_complete(path, identity):
        if rank == 0:
            publish_complete(path)
        log.info("store %s: %d/%d images done, 0 to compute", path.name, len(dataset), len(dataset))
    else:
        with store_lock(path) if rank == 0 else contextlib.nullcontext():
            # Another precompute may have finished it meanwhile; under torchrun every rank must enter _compute
            # (its barriers), so only a single process skips it.
            if not (world_size == 1 and is_complete(path, identity)):
                _compute(params, split, dataset, path, identity, rank, world_size, barrier, limit)
    if rank == 0 and not is_url(cache_dir) and is_complete(path, identity):
        _point_to(path, identity, Path(cache_dir) / STORE_POINTER.format(dataset=params.data.dataset, split=split))
    return path


def _point_to(path: Path, identity: StoreIdentity, pointer: Path) -> None:
    """Name the split's complete store in `pointer`; an unchanged pointer is not rewritten."""
    text = json.dumps({"store": path.name, "fingerprint": identity.fingerprint}, indent=2) + "\n"
    if not pointer.is_file() or pointer.read_text() != text:
        write_text(pointer, text)


def _compute(
    params: Params,
    split: str,
    dataset,
    path: Path,
    identity: StoreIdentity,
    rank: int,
    world_size: int,
    barrier,
    limit: int | None,
) -> None:
    """Create or resume the store and write this rank's missing images (rank 0: vocabulary and manifest)."""
    d, t = params.data, params.teacher
    device = resolve_device(t.device)
    clip = load_clip(t.clip_model, t.pretrained, image_size=d.image_size, device=device, dense_mode=t.dense_mode)
    crop_size = t.crop_size or clip.native_size
    bank = uses_view_bank(params, split)
    windows = view_windows(d.image_size, t.view_crops)
    shape = CacheShape(
        num_images=len(dataset),
        embed_dim=clip.embed_dim,
        grid=tuple(clip.grid),
        mask_size=d.image_size,
        max_regions=t.max_regions,
        num_classes=dataset.spec.num_classes,
        num_views=t.view_count if bank else len(windows),
        dense_tokens=stores_dense_tokens(params, split),
        view_boxes=bank,
    )
    manifest = {
        "fingerprint": identity.fingerprint,
        "inputs": identity.inputs,
        "dataset": d.dataset,
        "split": split,
        "ids": list(dataset.ids),
        "views": "bank" if bank else [list(v) for v in windows],
        "class_names": list(dataset.spec.class_names),
        "config": to_dict(params),
        "c2s_version": __version__,
    }
    writer = _open_writer(path, shape, manifest, t.store_format, rank, barrier)
    if rank == 0:
        text = clip.encode_text(list(dataset.spec.class_names), templates=dataset.spec.prompt_set(t.templates))
        writer.write_vocab(text.cpu().numpy().astype(np.float32), dataset.spec.seen_mask())
    todo = [i for i in range(len(dataset)) if not writer.is_done(i)][:limit]
    mine = shard_indices(todo, rank, world_size)
    log.info(
        "store %s: %d/%d images done, %d to compute on this rank",
        path.name,
        len(dataset) - len(todo),
        len(dataset),
        len(mine),
    )
    loader = DataLoader(
        _Resized(dataset, mine, d.image_size, t if bank else None),
        batch_size=t.batch_size,
        num_workers=t.workers if mine else 0,
    )
    start = time.perf_counter()
    with tqdm(total=len(mine), desc=f"precompute {split}", unit="img", disable=rank != 0) as bar:
        for idx, images, labels, *bank_views in as_in_main_process(loader):
            for i, rec in zip(idx.tolist(), teach_batch(clip, images, labels, params, crop_size, *bank_views)):
                writer.write_image(i, rec)
            bar.update(len(idx))
    if mine:
        log.info("%.2f images/s", len(mine) / (time.perf_counter() - start))
    if barrier is not None:
        barrier()
    if rank == 0:
        writer.finalize()
    writer.close()


def _open_writer(path, shape, manifest, fmt, rank, barrier):
    """Rank 0 creates (or reopens) the store; the others reopen it after a barrier."""
    if rank == 0:
        writer = CacheWriter.open(path, shape, manifest, fmt=fmt)
        if barrier is not None:
            barrier()
        return writer
    barrier()
    return CacheWriter.open(path, shape, manifest, fmt=fmt, create=False)
