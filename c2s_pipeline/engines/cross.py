"""Cross-dataset evaluation: a run, or the teacher's own dense map, scored against another dataset's whole
vocabulary (`c2s evaluate --dataset`).

Apart from engines/evaluate.py because it may embed the target's names with the run's teacher (CLIP, once), which
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

from c2s_pipeline.config import Params
from c2s_pipeline.data.prompts import as_json
from c2s_pipeline.data.registry import build_dataset, dataset_class, dataset_from_params
from c2s_pipeline.engines.evaluate import EvaluationError
from c2s_pipeline.eval.loop import confusion_matrix, dense_map_predictor, student_predictor
from c2s_pipeline.eval.metrics import per_class_rows, summarize
from c2s_pipeline.eval.open_vocab import write_vocab
from c2s_pipeline.eval.report import write_per_class_csv
from c2s_pipeline.files import write_json
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.student.checkpoint import load_run
from c2s_pipeline.student.torch_files import safe_load

log = logging.getLogger(__name__)


def _with_prompts(params: Params, templates) -> Params:
    """`params` whose teacher embeds with `templates`: a prompt set's name, or a folder's own sentences (a tuple,
    which the str-typed params field does not declare: it never comes from a params file)."""
    return dataclasses.replace(params, teacher=dataclasses.replace(params.teacher, templates=templates))


def vocab_for(
    params: Params, names: list[str], templates: str, weights: str, *, vocab: str | Path | None, cache_dir: str | Path
) -> torch.Tensor:
    """(C, D) text embeddings of a target vocabulary by the teacher of `params` (weights digest `weights`).

    From `vocab` (a `c2s vocab --dataset` file) when given; otherwise embedded once and kept in cache_dir as
    `vocab-<key>.pt`, the key covering the weights, the prompt set and the names, so later evaluations against
    the same vocabulary never load CLIP. A file of other names or of another teacher is refused.
    """
    if vocab is None:
        key = hashlib.sha256(json.dumps([weights, as_json(templates), names]).encode()).hexdigest()[:16]
        vocab = Path(cache_dir) / f"vocab-{key}.pt"
        if not vocab.is_file():
            log.info("embedding the %d target class names once into %s", len(names), vocab)
            write_vocab(_with_prompts(params, templates), names, vocab)
    fix = "rebuild it with `c2s vocab --dataset NAME --root PATH -o FILE` and the run's params"
    saved = safe_load(vocab, "vocabulary", fix, keys=("class_names", "text_embeddings"))
    if list(saved["class_names"]) != names:
        raise EvaluationError(f"{vocab} holds other class names than the target's {len(names)}; {fix}")
    if saved.get("weights_digest") != weights or saved.get("templates") != as_json(templates):
        raise EvaluationError(f"{vocab} was embedded by another teacher or prompt set than the run's; {fix}")
    return saved["text_embeddings"].float()


def _target(dataset: str, root: str | Path, split: str | None):
    """The target's reader with no zero-shot split: every class of it is scored alike."""
    return build_dataset(dataset, root, split or dataset_class(dataset).DEFAULT_SPLITS[-1], world_unseen=())


def write_target_vocab(
    params: Params, out: str | Path, *, dataset: str, root: str | Path, split: str | None = None
) -> Path:
    """`c2s vocab --dataset`: a dataset's class names embedded by params' teacher with the dataset's prompt set
    (as cross-dataset evaluation would embed them), for `c2s evaluate --dataset ... --vocab`."""
    spec = _target(dataset, root, split).spec
    return write_vocab(_with_prompts(params, spec.prompt_set(params.teacher.templates)), list(spec.class_names), out)


def _write(
    name: str, iou: torch.Tensor, names: list[str], trained: np.ndarray, pixel_acc: float, out_json: str | Path
) -> Path:
    """mIoU over the target's classes, over those named like a class trained on and over the rest (numbers only,
    as DVC's metrics are), and per-class IoU in a CSV beside it."""
    scores = summarize(iou.cpu(), trained, pixel_acc)
    payload = {
        "mIoU": scores["mIoU"],
        "mIoU_trained_names": scores["sIoU"],
        "mIoU_new_names": scores["uIoU"],
        "trained_names": int(trained.sum()),
        "classes": len(names),
        "pixel_acc": scores["pixel_acc"],
    }
    write_per_class_csv(per_class_rows(iou.cpu(), names, trained), Path(out_json).with_suffix(".csv"))
    log.info(
        "%s: mIoU %.2f (%d names trained on: %.2f; the other %d: %.2f)",
        name,
        payload["mIoU"],
        payload["trained_names"],
        payload["mIoU_trained_names"],
        len(names) - payload["trained_names"],
        payload["mIoU_new_names"],
    )
    return write_json(Path(out_json), payload)


def evaluate_run_on(
    params: Params,
    run_dir: str | Path,
    out_json: str | Path,
    *,
    dataset: str,
    root: str | Path,
    split: str | None = None,
    cache_dir: str | Path,
    store: str | Path | None = None,
    vocab: str | Path | None = None,
) -> Path:
    """A student scored against another dataset's whole vocabulary (every class a name it may never have been
    trained on): mIoU over the target's classes, and over those named like a class it was trained on (seen)
    and the rest. Eval mode and flip of params; no seen bias (the target has no seen split)."""
    device = resolve_device(params.eval.device)
    student, reader, run = load_run(run_dir, device=device, cache_dir=cache_dir, store=store)
    target = _target(dataset, root, split)
    names = list(target.spec.class_names)
    prompts = target.spec.prompt_set(run.params.teacher.templates)
    weights = reader.manifest.get("inputs", {}).get("weights")
    emb = vocab_for(run.params, names, prompts, weights, vocab=vocab, cache_dir=cache_dir).to(device)
    seen_names = {n for n, s in zip(run.provenance["class_names"], reader.class_seen()) if s}
    trained = np.array([n in seen_names for n in names])
    logits_fn = lambda x: student.predict_logits(x, emb, run.params.student.logit_scale)  # noqa: E731
    predict = student_predictor(logits_fn, run.params, params.eval, np.zeros(len(names), bool), 0.0, device)
    cm = confusion_matrix(target, predict, device=device, desc=f"evaluate {Path(run_dir).name} on {dataset}")
    return _write(f"{Path(run_dir).name} on {dataset}", cm.iou(), names, trained, cm.pixel_accuracy(), out_json)


def evaluate_teacher_on(
    params: Params,
    out_json: str | Path,
    *,
    dataset: str,
    root: str | Path,
    split: str | None = None,
    cache_dir: str | Path,
    vocab: str | Path | None = None,
) -> Path:
    """The teacher's own dense zero-shot map (params' CLIP, dense mode and image size, as its store holds it) on
    another dataset's vocabulary: what a student of this teacher could at best inherit there. Names are split
    into trained / new by the seen classes of params' own dataset."""
    from c2s_pipeline.teacher.clip import load_clip

    t = params.teacher
    clip = load_clip(
        t.clip_model,
        t.pretrained,
        image_size=params.data.image_size,
        device=resolve_device(t.device),
        dense_mode=t.dense_mode,
    )
    own = dataset_from_params(params, params.data.val_split).spec
    target = _target(dataset, root, split)
    names = list(target.spec.class_names)
    prompts = target.spec.prompt_set(t.templates)
    text = vocab_for(params, names, prompts, clip.weights_digest, vocab=vocab, cache_dir=cache_dir)
    seen_names = {own.class_names[i] for i in np.nonzero(own.seen_mask())[0]}
    trained = np.array([n in seen_names for n in names])

    def tokens(sample, _):  # (h, w, D)
        return clip.encode_images(clip.preprocess(sample.image[None], params.data.image_size)).dense_tokens[0].cpu()

    cm = confusion_matrix(
        target,
        dense_map_predictor(tokens, text, np.zeros(len(names), bool), 0.0),
        desc=f"evaluate the teacher's dense map on {dataset}",
    )
    return _write(f"the teacher's dense map on {dataset}", cm.iou(), names, trained, cm.pixel_accuracy(), out_json)
