"""Export a run: the trained student as one ONNX graph (open vocabulary, or one vocabulary folded in)."""

from __future__ import annotations

import logging
from pathlib import Path

from c2s_pipeline.eval.inference import slide_stride
from c2s_pipeline.student.checkpoint import load_student, load_vocab
from c2s_pipeline.student.export import DeployedStudent, export_onnx

log = logging.getLogger(__name__)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    vocab: str | Path | None = None,
    cache_dir: str | Path,
    store: str | Path | None = None,
) -> Path:
    """Export the student of `run_dir`; with `vocab` (from `c2s vocab`) its embeddings are folded in. The run's
    teacher store is found as checkpoint.run_store finds it."""
    student, text, run = load_student(run_dir, cache_dir=cache_dir, store=store)
    names, folded = list(run.provenance["class_names"]), None
    if vocab is not None:
        names, folded = load_vocab(vocab)
    model = DeployedStudent(
        student,
        run.params.student.logit_scale,
        run.params.data.image_size,
        text=folded,
        normalisation=run.params.student.normalisation,
    )
    e, size = run.params.eval, run.params.data.image_size
    eval_mode = {"mode": e.mode, "stride": slide_stride(e.stride, size), "flip": e.flip}  # as `c2s evaluate` runs it
    path = export_onnx(model, out, names, embed_dim=text.shape[1], text=text, eval_mode=eval_mode)
    log.info(
        "exported %s (%s, %d classes) to %s",
        run_dir,
        "folded" if folded is not None else "open-vocabulary",
        len(names),
        path,
    )
    return path
