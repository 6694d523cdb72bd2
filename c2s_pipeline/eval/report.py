"""Human-facing outputs: the metrics table, per-class bar chart, per-class CSV, colour overlays, and the tables and
marker-delimited excerpts of the generated docs pages."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# seen_as_unseen / unseen_as_seen: % of one split's labelled pixels predicted as the other's classes
TABLE_COLUMNS = ("sIoU", "uIoU", "hIoU", "mIoU", "pixel_acc", "seen_as_unseen", "unseen_as_seen")


def metrics_table(rows: list[dict]) -> str:
    """Markdown table, one row per evaluated model (2 decimals)."""
    head = "| model | " + " | ".join(TABLE_COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(TABLE_COLUMNS)
    body = [
        "| " + r["name"] + " | " + " | ".join(f"{r.get(c, float('nan')):.2f}" for c in TABLE_COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join([head, sep, *body])


def write_per_class_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "iou", "seen"])
        writer.writeheader()
        writer.writerows(
            {"class": r["class"], "iou": "" if r["iou"] is None else r["iou"], "seen": r["seen"]} for r in rows
        )
    return path


def read_per_class_csv(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [
            {"class": r["class"], "iou": float(r["iou"]) if r["iou"] else None, "seen": r["seen"] == "True"}
            for r in csv.DictReader(f)
        ]


def per_class_bar_chart(results: dict[str, list[dict]], out_png: str | Path) -> Path:
    """Grouped bars of per-class IoU, one group per class; unseen classes marked with '*'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    classes = [r["class"] + ("" if r["seen"] else " *") for r in results[names[0]]]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(classes)), 4))
    for k, name in enumerate(names):
        values = [r["iou"] or 0.0 for r in results[name]]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_title("per-class IoU (* = unseen)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8, the VOC bit-interleaved palette shifted by one (no black)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i + 1, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        out[i] = rgb
    return out


def legend_entries(pred: np.ndarray, class_names: list[str]) -> list[tuple[int, str]]:
    """(class id, name) of every class present in the prediction, ascending."""
    return [(int(c), class_names[int(c)]) for c in np.unique(pred) if 0 <= c < len(class_names)]


def overlay_image(
    image: np.ndarray, pred: np.ndarray, class_names: list[str], alpha: float = 0.5, legend_top: int = 4
) -> Image.Image:
    """Image blended with the class colours (none where pred is outside the names: unlabelled), and a legend
    panel on the right naming present classes from `legend_top` pixels down."""
    colours = palette(len(class_names))
    valid = (pred >= 0) & (pred < len(class_names))
    colour = colours[np.clip(pred, 0, len(class_names) - 1)]
    blended = image.astype(np.float32)
    blended[valid] = (1 - alpha) * blended[valid] + alpha * colour[valid]
    entries = legend_entries(pred, class_names)
    font = ImageFont.load_default()
    row_h, panel_w = 14, 12 + 7 * max([len(n) for _, n in entries] + [4]) + 10
    h, w = image.shape[:2]
    canvas = Image.new("RGB", (w + panel_w, max(h, legend_top + row_h * len(entries) + 4)), "white")
    canvas.paste(Image.fromarray(blended.round().astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, (cid, name) in enumerate(entries):
        y = legend_top + k * row_h
        draw.rectangle([w + 4, y, w + 14, y + 10], fill=tuple(int(v) for v in colours[cid]))
        draw.text((w + 18, y - 1), name, fill="black", font=font)
    return canvas


def overlay_png(
    image: np.ndarray, pred: np.ndarray, class_names: list[str], out_path: str | Path, alpha: float = 0.5
) -> Path:
    """overlay_image written as a PNG."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    overlay_image(image, pred, class_names, alpha).save(out_path)
    return out_path


# The columns the results page shows of each evaluated model (what `make demo` is judged by).
RESULT_COLUMNS = ("sIoU", "uIoU", "hIoU", "seen_as_unseen", "unseen_as_seen")
# Cross-dataset evaluation (engines/cross.py): mIoU over the target's classes, over those named like a class the
# run trained on, and over the rest.
CROSS_COLUMNS = ("mIoU", "mIoU_trained_names", "mIoU_new_names")


def results_table(models: list[dict], columns: tuple[str, ...] = RESULT_COLUMNS) -> str:
    """Markdown table of models given as {"label": ..., <column>: value}, 2 decimals."""
    head = "| model | " + " | ".join(columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    body = ["| " + m["label"] + " | " + " | ".join(f"{m[c]:.2f}" for c in columns) + " |" for m in models]
    return "\n".join([head, sep, *body])


def per_class_table(rows: list[dict], before: str, after: str, headers: tuple[str, str] | None = None) -> str:
    """Markdown table of per-class IoU, rows {"class", "seen", before: IoU, after: IoU}, 1 decimal."""
    head_before, head_after = headers or (before, after)
    lines = [f"| class | split | {head_before} | {head_after} | difference |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['class']} | {'seen' if r['seen'] else 'unseen'} | {r[before]:.1f} | {r[after]:.1f} | "
            f"{r[after] - r[before]:+.1f} |"
        )
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, body: str) -> str:
    """`text` with what lies between `<!-- name -->` and `<!-- /name -->` replaced by `body`.

    A marker pair on one line takes `body` inline; one on lines of its own keeps them, with `body` between.
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise KeyError(f"no {start} ... {end} pair in the text")
    inner = text[i + len(start) : j]
    sep = "\n" if inner.startswith("\n") else ""
    return text[: i + len(start)] + sep + body + sep + text[j:]
