"""Stages `vocab` and `predict`: open-vocabulary overlays from the student plus saved text embeddings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from c2s_pipeline.config import Params
from c2s_pipeline.eval.deployed import deployed_scores
from c2s_pipeline.eval.open_vocab import (
    PredictError,
    class_map,
    clean_names,
    label_pixels,
    prepare,
    read_image,
    with_background,
)
from c2s_pipeline.eval.report import overlay_png
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.student.checkpoint import load_student, load_vocab
from c2s_pipeline.student.export import IMAGE, METADATA_KEY, SCORES, TEXT

log = logging.getLogger(__name__)


def _vocabulary(
    names: list[str], emb: torch.Tensor, vocab: str | Path | None, classes: list[str] | None
) -> tuple[list[str], torch.Tensor]:
    """Class names and embeddings to predict with: a vocab file, or the training vocabulary (names, emb);
    `classes` keeps those names only."""
    if vocab is not None:
        vocab_names, vocab_emb = load_vocab(vocab)
        if vocab_emb.shape[1] != emb.shape[1]:
            raise PredictError(
                f"{vocab}: embedding width {vocab_emb.shape[1]} does not match "
                f"the student's {emb.shape[1]}; rebuild it with `c2s vocab` for this teacher"
            )
        names, emb = vocab_names, vocab_emb.to(emb.device)
    if classes:
        missing = [c for c in classes if c not in names]
        if missing:
            raise PredictError(
                f"no text embedding for {', '.join(missing)}; run `c2s vocab "
                f'"{",".join(classes)}" -o vocab.pt` and pass --vocab vocab.pt'
            )
        keep = [names.index(c) for c in classes]
        names, emb = classes, emb[keep]
    return names, emb


def run(
    params: Params,
    images: list[str],
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    vocab: str | Path | None = None,
    classes: list[str] | None = None,
    cache_dir: str | Path,
    store: str | Path | None = None,
) -> Path:
    """Write one overlay PNG with a legend per input image; returns the output folder. The run's teacher store
    (its vocabulary's text embeddings) is found as checkpoint.run_store finds it."""
    device = resolve_device(params.eval.device)
    student, text, run = load_student(run_dir, device, cache_dir=cache_dir, store=store)
    classes = with_background(clean_names(classes), params.predict) if classes else None
    names, emb = _vocabulary(list(run.provenance["class_names"]), text, vocab, classes)
    order, n_named, threshold = prepare(names, params.predict)
    names, emb = [names[i] for i in order[:n_named]], emb[order]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for image_path in images:
        image = read_image(image_path)
        pred = class_map(student, emb, run.params, params.eval, image, n_named=n_named, threshold=threshold)
        overlay_png(image, pred, names, out_dir / f"{Path(image_path).stem}_overlay.png", params.predict.opacity)
    log.info("wrote %d overlays to %s", len(images), out_dir)
    return out_dir


def run_onnx(
    images: list[str],
    model_path: str | Path,
    out_dir: str | Path,
    *,
    vocab: str | Path | None = None,
    classes: list[str] | None = None,
    params: Params | None = None,
) -> Path:
    """The same overlays as `run`, from an exported graph through onnxruntime (no student code, no CLIP)."""
    try:
        import onnxruntime
    except ImportError:
        raise PredictError("--onnx needs the deploy extra: pip install 'c2s[deploy]'") from None
    try:
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        if not {"mode", "class_names"} <= set(meta) or (meta["mode"] != "folded" and "text_embeddings" not in meta):
            raise KeyError("incomplete metadata")
    except Exception as err:  # noqa: BLE001 - onnxruntime reports a bad file with its own exception types
        raise PredictError(
            f"{model_path} is not a c2s ONNX model ({err.__class__.__name__}); "
            "export one with `c2s export --run RUN --out model.onnx`"
        ) from None
    folded = meta["mode"] == "folded"
    names = list(meta["class_names"])
    if folded and vocab is not None:
        raise PredictError(f"{model_path} has its vocabulary folded in; export with no --vocab to pass one here")
    params = params or Params()
    emb = torch.zeros(len(names), 1) if folded else torch.tensor(meta["text_embeddings"], dtype=torch.float32)
    classes = with_background(clean_names(classes), params.predict) if classes else None
    try:
        names, emb = _vocabulary(names, emb, vocab, classes)
        order, n_named, threshold = prepare(names, params.predict)
    except PredictError as err:
        if not folded:
            raise
        raise PredictError(
            f"{model_path} has its vocabulary folded in: {err}; export it again with a --vocab "
            "that holds every name needed"
        ) from None
    keep = [list(meta["class_names"]).index(names[i]) for i in order] if folded else None
    names, emb = [names[i] for i in order[:n_named]], emb[order]
    text = {} if folded else {TEXT: emb.numpy().astype(np.float32)}

    def run_graph(batch: np.ndarray) -> np.ndarray:
        return session.run([SCORES], {IMAGE: batch.astype(np.float32), **text})[0]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for image_path in images:
        image = read_image(image_path)
        scores = deployed_scores(run_graph, image, meta)  # (C, H, W) probabilities, in the exported eval mode
        if keep is not None:  # a folded graph's softmax spans its whole vocabulary: over the names kept
            scores = scores[keep] / np.maximum(scores[keep].sum(0, keepdims=True), np.finfo(np.float32).tiny)
        pred = label_pixels(scores, n_named, threshold)
        overlay_png(image, pred, names, out_dir / f"{Path(image_path).stem}_overlay.png", params.predict.opacity)
    log.info("wrote %d overlays to %s (onnxruntime)", len(images), out_dir)
    return out_dir
