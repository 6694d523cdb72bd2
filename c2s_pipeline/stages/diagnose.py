"""Stage `world diagnose`: can the world's teacher teach, and what did the students learn (JSON + plot)."""

from __future__ import annotations

import logging
from pathlib import Path

from c2s_pipeline.cache.store import CacheError
from c2s_pipeline.config import Params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.files import write_json
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.teacher.clip import load_clip
from c2s_pipeline.teacher.identity import open_store
from c2s_pipeline.world import diagnose as D

log = logging.getLogger(__name__)


def run(
    params: Params,
    out_json: str | Path,
    *,
    cache_dir: str | Path,
    runs: dict[str, Path] | None = None,
    metrics: dict[str, Path] | None = None,
) -> Path:
    """Teacher text/image/dense diagnostics, mining quality and the students' curves -> JSON + plot."""
    d, t = params.data, params.teacher
    device = resolve_device(t.device)
    clip = load_clip(t.clip_model, t.pretrained, image_size=d.image_size, device=device, dense_mode=t.dense_mode)
    val = dataset_from_params(params, d.val_split)
    names = list(val.spec.class_names)
    text = clip.encode_text(names, templates=val.spec.prompt_set(t.templates)).cpu()
    report = {
        "text": D.text_similarity(text, names),
        "crops": D.crop_zero_shot(clip, val, text),
        "scenes": D.scene_zero_shot(clip, val, text, d.image_size),
        "dense": D.dense_modes_miou(clip, val, text, d.image_size, params.eval.seen_bias),
    }
    try:
        reader = open_store(params, d.train_split, cache_dir=cache_dir, seen_only=True)
    except CacheError as err:
        log.warning("no mining diagnostics: %s", err)
    else:
        report["mining"] = D.mining_quality(reader, dataset_from_params(params, d.train_split), d.image_size)
    report["students"] = D.student_summaries(runs or {}, metrics or {})
    out_json = write_json(Path(out_json), report)
    D.diagnostics_plot(report, names, list(val.spec.unseen), out_json.with_suffix(".png"))
    summary = {
        "same_colour_cos": report["text"]["same_colour_mean"],
        "crop_seen": report["crops"]["seen_top1"],
        "crop_unseen": report["crops"]["unseen_top1"],
        "scene_present": report["scenes"]["present"],
        **{f"dense_{m}_uIoU": r["uIoU"] for m, r in report["dense"].items()},
        **report.get("mining", {}),
    }
    log.info("diagnostics: %s", {k: v if v is None else round(v, 2) for k, v in summary.items()})
    return out_json
