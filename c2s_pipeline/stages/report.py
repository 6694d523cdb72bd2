"""Stage `report`: the C2S / seen-only / CLIP-dense rows side by side, as markdown and a bar chart."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from c2s_pipeline.eval.report import (
    CROSS_COLUMNS,
    metrics_table,
    per_class_bar_chart,
    read_per_class_csv,
    results_table,
)

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
BAR_CHART = "per_class_iou.png"


def cross_table(metric_files: Sequence[str | Path]) -> str:
    """Markdown table of cross-dataset metrics files, a row named by its file (metrics/c2s-on-world_b.json)."""
    rows = [{"label": Path(f).stem, **json.loads(Path(f).read_text())} for f in metric_files]
    return results_table(rows, CROSS_COLUMNS)


def run(metric_files: Sequence[str | Path], out_dir: str | Path, cross: Sequence[str | Path] = ()) -> Path:
    """Render the metrics JSON files into out_dir/report.md and out_dir/per_class_iou.png; a row is named by its
    file (metrics/c2s.json: c2s). `cross`: cross-dataset metrics files, a second table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [{"name": Path(f).stem, **json.loads(Path(f).read_text())} for f in metric_files]
    table = metrics_table(results)
    per_class = {r["name"]: read_per_class_csv(Path(f).with_suffix(".csv")) for r, f in zip(results, metric_files)}
    per_class_bar_chart(per_class, out_dir / BAR_CHART)
    text = f"# c2s results\n\n{table}\n\nUnseen classes are marked * in {BAR_CHART}.\n"
    if cross:
        text += (
            "\n## Another dataset's vocabulary\n\nmIoU over the target's classes, over those named like a "
            f"class the run trained on, and over the rest:\n\n{cross_table(cross)}\n"
        )
    (out_dir / REPORT_MD).write_text(text)
    print(text)
    return out_dir / REPORT_MD
