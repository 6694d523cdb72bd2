"""Cross-dataset evaluation: a run scored against another dataset's whole vocabulary (`c2s evaluate --dataset`).

Apart from stages/evaluate.py because it embeds the target's names with the run's teacher (CLIP, once), which
the benchmarks' evaluation never loads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from c2s_pipeline.config import DEFAULT_CACHE_DIR, Params
from c2s_pipeline.data.registry import build_dataset, dataset_class
from c2s_pipeline.eval.metrics import per_class_rows, summarize
from c2s_pipeline.eval.report import write_per_class_csv
from c2s_pipeline.files import write_json
from c2s_pipeline.student.checkpoint import load_run, load_vocab
from stages.common import resolve_device
from stages.evaluate import EvaluationError, confusion
from stages.predict import write_vocab

log = logging.getLogger(__name__)


def target_embeddings(run, names: list[str], templates: str, cache_dir: str | Path) -> torch.Tensor:
    """(C, D) text embeddings of a target vocabulary by the run's teacher, embedded once and kept as a `c2s vocab`
    file in cache_dir under a name of (the run's store fingerprint, which covers the CLIP weights, the prompt set,
    the names): later evaluations against the same vocabulary never load CLIP."""
    key = hashlib.sha256(json.dumps([run.provenance["fingerprint"], templates, names]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"vocab-{key}.pt"
    if not path.is_file():
        log.info("embedding the %d target class names once into %s", len(names), path)
        teacher = dataclasses.replace(run.params.teacher, templates=templates)
        write_vocab(dataclasses.replace(run.params, teacher=teacher), names, path)
    saved, emb = load_vocab(path)
    if saved != names:
        raise EvaluationError(f"{path} holds other class names; delete it and run again")
    return emb


def run(params: Params, run_dir: str | Path, out_json: str | Path, *, dataset: str, root: str | Path,
        split: str | None = None, cache_dir: str | Path = DEFAULT_CACHE_DIR, store: str | Path | None = None) -> Path:
    """A student scored against another dataset's whole vocabulary (every class a name it may never have been
    trained on): mIoU over the target's classes, and over those named like a class it was trained on (seen)
    and the rest. Eval mode and flip of params; no seen bias (the target has no seen split)."""
    device = resolve_device(params.eval.device)
    student, reader, run = load_run(run_dir, device=device, cache_dir=cache_dir, store=store)
    target = build_dataset(dataset, root, split or dataset_class(dataset).DEFAULT_SPLITS[-1])
    names = list(target.spec.class_names)
    prompts = target.spec.prompt_set(run.params.teacher.templates)
    emb = target_embeddings(run, names, prompts, cache_dir).to(device)
    seen_names = {n for n, s in zip(run.provenance["class_names"], reader.class_seen()) if s}
    trained = np.array([n in seen_names for n in names])
    logits_fn = lambda x: student.predict_logits(x, emb, run.params.student.logit_scale)  # noqa: E731
    cm = confusion(logits_fn, target, run.params, params.eval, np.zeros(len(names), bool), 0.0, device,
                   f"evaluate {Path(run_dir).name} on {dataset}")
    iou = cm.iou().cpu()
    scores = summarize(iou, trained, cm.pixel_accuracy())
    payload = {"mIoU": scores["mIoU"], "mIoU_trained_names": scores["sIoU"], "mIoU_new_names": scores["uIoU"],
               "trained_names": int(trained.sum()), "classes": len(names), "pixel_acc": scores["pixel_acc"]}
    write_per_class_csv(per_class_rows(iou, names, trained), Path(out_json).with_suffix(".csv"))
    log.info("%s on %s: mIoU %.2f (%d names it trained on: %.2f; the other %d: %.2f)", Path(run_dir).name, dataset,
             payload["mIoU"], payload["trained_names"], payload["mIoU_trained_names"],
             len(names) - payload["trained_names"], payload["mIoU_new_names"])
    return write_json(Path(out_json), {**payload, "dataset": dataset, "split": target.split})
