"""Train a student: distil a teacher store into an smp student. Never imports open_clip."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from c2s_pipeline import __version__
from c2s_pipeline.cache.fingerprint import file_sha256
from c2s_pipeline.config import ConfigError, Params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.runtime import resolve_device, seed_everything
from c2s_pipeline.student.checkpoint import RunRecord
from c2s_pipeline.student.data import DistillDataset, make_loader
from c2s_pipeline.student.loop import train
from c2s_pipeline.student.model import Student, is_weights_file
from c2s_pipeline.student.task import C2STask
from c2s_pipeline.teacher.identity import open_store

log = logging.getLogger(__name__)


def baseline_params(params: Params) -> Params:
    """The plain supervised seen-only baseline: the same trainer with every distillation term off."""
    loss = dataclasses.replace(params.loss, use_global=False, use_local=False, use_latent=False)
    return dataclasses.replace(params, loss=loss)


def train_student(
    params: Params,
    run_dir: str | Path,
    *,
    cache: str | Path | None = None,
    cache_dir: str | Path,
    resume: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Train a student from the teacher store of the train split; returns the run folder.

    Under torchrun (world_size > 1) each rank takes batch_size / world_size of every global batch and
    the task runs inside DistributedDataParallel; rank 0 alone writes checkpoints and logs.
    """
    run_dir = Path(run_dir)
    d, tc = params.data, params.train
    seed_everything(tc.seed)
    reader = open_store(params, d.train_split, cache_dir=cache_dir, cache=cache, seen_only=True)
    cache = reader.path
    # The single gate: training reads labels through seen_only=True only.
    dataset = dataset_from_params(params, d.train_split, seen_only=True)
    distill = DistillDataset(
        reader, dataset, d.image_size, tc, seed=tc.seed, normalisation=params.student.normalisation
    )
    student = Student(
        params.student.arch,
        params.student.encoder,
        params.student.encoder_weights,
        embed_dim=reader.shape.embed_dim,
        head=params.student.head,
        logits=params.student.seen_logits,
    )
    seen_text = torch.from_numpy(reader.text_embeddings()).float()  # (C_s, D) seen rows only
    task = C2STask(student, seen_text, params.loss, params.student.logit_scale)
    provenance = {
        "teacher_store": str(cache),
        "fingerprint": reader.fingerprint,
        "class_names": list(reader.class_names),
        "c2s_version": __version__,
    }
    weights = params.student.encoder_weights
    if weights is not None and is_weights_file(weights):  # a path says where, not which weights: record which
        provenance["encoder_weights_sha256"] = file_sha256(weights)
    run = RunRecord(params, provenance)
    log.info(
        "training %s/%s on %s (%d images, %d seen classes)",
        params.student.arch,
        params.student.encoder,
        Path(str(cache)).name,
        len(distill),
        seen_text.shape[0],
    )
    device = resolve_device(tc.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if tc.batch_size % world_size:
        raise ConfigError(
            f"train.batch_size {tc.batch_size} is not divisible by the {world_size} ranks; give a "
            f"multiple of {world_size}"
        )
    local = dataclasses.replace(tc, batch_size=tc.batch_size // world_size)
    wrap = None
    if world_size > 1:
        # broadcast_buffers off: the CLS bank is kept identical by gathering, not by broadcast;
        # unused parameters: a batch without latent regions leaves the generator out of the graph.
        wrap = functools.partial(DistributedDataParallel, broadcast_buffers=False, find_unused_parameters=True)
    return train(
        task,
        lambda start: make_loader(distill, local, start, rank, world_size),
        tc,
        run_dir,
        run=run,
        device=device,
        resume=resume,
        wrap=wrap,
    )
