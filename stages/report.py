"""Stage `report`: the C2S / seen-only / CLIP-dense rows side by side, as markdown and a bar chart."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from c2s_pipeline.eval.report import metrics_table, per_class_bar_chart, read_per_class_csv

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
BAR_CHART = "per_class_iou.png"


def run(metric_files: list[str | Path], out_dir: str | Path) -> Path:
    """Render the metrics JSON files into out_dir/report.md and out_dir/per_class_iou.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [json.loads(Path(f).read_text()) for f in metric_files]
    table = metrics_table(results)
    per_class = {r["name"]: read_per_class_csv(Path(f).with_suffix(".csv")) for r, f in zip(results, metric_files)}
    per_class_bar_chart(per_class, out_dir / BAR_CHART)
    (out_dir / REPORT_MD).write_text("# c2s results\n\n" + table + "\n\nUnseen classes are marked * in "
                                     f"{BAR_CHART}.\n")
    print(table)
    return out_dir / REPORT_MD
