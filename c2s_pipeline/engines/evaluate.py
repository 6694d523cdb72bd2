"""Evaluate: sIoU / uIoU / hIoU of a trained student (or of CLIP's own dense map), no CLIP loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from c2s_pipeline.config import Params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.eval.loop import confusion_matrix, dense_map_predictor, student_predictor
from c2s_pipeline.eval.metrics import ConfusionMatrix, per_class_rows, split_confusion, summarize
from c2s_pipeline.eval.report import write_per_class_csv
from c2s_pipeline.eval.speed import count_flops, count_params, measure_fps
from c2s_pipeline.files import write_json
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.student.checkpoint import load_run
from c2s_pipeline.teacher.identity import open_store

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """A run evaluated under a zero-shot split other than its own; what to do."""


def check_same_split(run_dir, store_seen: np.ndarray, dataset) -> None:
    """Refuse to score a run's uIoU over classes it was trained on: the seen flags of the store it was trained
    from must be those of the dataset these params build."""
    seen = dataset.spec.seen_mask()
    if len(store_seen) != len(seen) or not np.array_equal(store_seen, seen):
        names = dataset.spec.class_names
        own = [names[i] for i in np.nonzero(~store_seen)[0]] if len(store_seen) == len(seen) else "another vocabulary"
        raise EvaluationError(
            f"run {run_dir} was trained with unseen classes {own}, these params make "
            f"{[names[i] for i in dataset.spec.unseen]} unseen: evaluate it with the params it was "
            "trained with (its config.json)"
        )


def _val_dataset(params: Params, split: str | None):
    return dataset_from_params(params, split or params.data.val_split)


def _finish(name: str, cm: ConfusionMatrix, dataset, extra: dict, out_json: Path) -> Path:
    """Summaries + per-class rows into metrics JSON and a per-class CSV beside it (for dvc plots).

    The JSON holds numbers only, as `dvc metrics show` tabulates them: the settings that made them are the params
    files and the run's config.json (dvc.yaml names the run and the split).
    """
    seen = dataset.spec.seen_mask()
    iou = cm.iou()
    summary = summarize(iou, torch.from_numpy(seen), cm.pixel_accuracy())
    rows = per_class_rows(iou, list(dataset.spec.class_names), seen)
    payload = {**summary, **split_confusion(cm.mat, seen), **extra}
    write_per_class_csv(rows, out_json.with_suffix(".csv"))
    log.info("%s: sIoU %.2f uIoU %.2f hIoU %.2f", name, summary["sIoU"], summary["uIoU"], summary["hIoU"])
    return write_json(out_json, payload)


def evaluate_run(
    params: Params,
    run_dir: str | Path,
    out_json: str | Path,
    *,
    split: str | None = None,
    cache_dir: str | Path,
    store: str | Path | None = None,
) -> Path:
    """Evaluate the student in `run_dir` on the full-label split; writes metrics JSON + per-class CSV. The run's
    teacher store is found by fingerprint in cache_dir, or is `store` (checkpoint.run_store)."""
    e = params.eval
    device = resolve_device(e.device)
    student, reader, run = load_run(run_dir, device=device, cache_dir=cache_dir, store=store)
    dataset = _val_dataset(params, split)
    check_same_split(run_dir, reader.class_seen(), dataset)
    text = torch.from_numpy(reader.text_embeddings()).float().to(device)
    size = run.params.data.image_size
    logits_fn = lambda x: student.predict_logits(x, text, run.params.student.logit_scale)  # noqa: E731
    predict = student_predictor(logits_fn, run.params, e, dataset.spec.seen_mask(), e.seen_bias, device)
    cm = confusion_matrix(dataset, predict, device=device, desc=f"evaluate {Path(run_dir).name}")
    example = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode():
        fps = measure_fps(logits_fn, example, e.fps_warmup, e.fps_iters, device)
    extra = {"fps": fps, "params": count_params(student), "flops": count_flops(student, example), "image_size": size}
    return _finish(Path(run_dir).name, cm, dataset, extra, Path(out_json))


def evaluate_clip_dense(
    params: Params, out_json: str | Path, *, split: str | None = None, cache_dir: str | Path
) -> Path:
    """CLIP's own dense zero-shot map: cached dense tokens of the split vs all text embeddings."""
    dataset = _val_dataset(params, split)
    reader = open_store(params, split or params.data.val_split, cache_dir=cache_dir, seen_only=False)
    text = torch.from_numpy(reader.text_embeddings()).float()  # (C, D)
    stored = lambda _, i: torch.from_numpy(reader.dense_tokens(i).astype(np.float32))  # noqa: E731  (h, w, D)
    predict = dense_map_predictor(stored, text, dataset.spec.seen_mask(), params.eval.seen_bias)
    cm = confusion_matrix(dataset, predict, desc="evaluate clip dense")
    return _finish("clip_dense", cm, dataset, {}, Path(out_json))
