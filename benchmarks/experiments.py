"""The table of a sweep run as DVC experiments (`make sweep`): C2S vs seen-only per experiment, on world A's
split and on world B's vocabulary, with the median and range over the experiments.

    make sweep SEEDS="0 1 2"                       # queues seeds x {default, other} split, runs them one at a time
    python -m benchmarks.experiments --out metrics/sweep.md

It reads what `dvc exp show --json` reports (or a saved copy of it, --json), so every number is one DVC recorded
for an experiment's own params.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import yaml

SPLIT_COLUMNS = ("sIoU", "uIoU", "hIoU")
CROSS_COLUMNS = ("mIoU", "mIoU_trained_names", "mIoU_new_names")
ARMS = {"c2s": "C2S", "seen_only": "seen-only", "clip_dense": "teacher's dense map"}
TARGET = "world_b"


def experiments(shown: list[dict]) -> list[dict]:
    """Every experiment of `dvc exp show --json` that finished with metrics: {"name", "params", "metrics"}, where
    params is params.yaml's and metrics maps a metrics file's stem (c2s, c2s-on-world_b, ...) to its numbers."""
    found = []
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                metrics = {Path(f).stem: m["data"] for f, m in (data.get("metrics") or {}).items() if "data" in m}
                if metrics:
                    params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                    found.append({"name": rev.get("name") or exp.get("name"), "params": params, "metrics": metrics})
    return found


def split_name(unseen: list[str], default: list[str]) -> str:
    return "default" if list(unseen) == list(default) else "other"


def _cells(values: list[float]) -> str:
    """median [min, max] of one column over the experiments."""
    return f"{statistics.median(values):+.1f} [{min(values):+.1f}, {max(values):+.1f}]"


def table(runs: list[dict], default_unseen: list[str]) -> str:
    """Markdown: one row per experiment, then the median and range of C2S minus seen-only."""
    head = (
        "| experiment | seed | split | C2S s / u / h | seen-only s / u / h | C2S - seen-only | world B new names: "
        "C2S / seen-only / teacher |\n|---|---:|---|---|---|---|---|"
    )
    lines, diffs, cross = [], [], []
    fmt = lambda m, cols: " / ".join(f"{m[c]:.1f}" for c in cols)  # noqa: E731
    for run in sorted(runs, key=lambda r: (r["params"]["world"]["seed"], r["name"])):
        m, world = run["metrics"], run["params"]["world"]
        diff = [m["c2s"][c] - m["seen_only"][c] for c in SPLIT_COLUMNS]
        diffs.append(diff)
        on_b = [m.get(f"{arm}-on-{TARGET}") for arm in ARMS]
        cross.append(on_b if all(on_b) else None)
        lines.append(
            f"| {run['name']} | {world['seed']} | {split_name(world['unseen'], default_unseen)} | "
            f"{fmt(m['c2s'], SPLIT_COLUMNS)} | {fmt(m['seen_only'], SPLIT_COLUMNS)} | "
            + " / ".join(f"{d:+.1f}" for d in diff)
            + " | "
            + (" / ".join(f"{b['mIoU_new_names']:.1f}" for b in on_b) if all(on_b) else "-")
            + " |"
        )
    summary = [
        f"\nC2S - seen-only over {len(runs)} experiments, median [min, max]: "
        + "; ".join(f"{c} {_cells([d[k] for d in diffs])}" for k, c in enumerate(SPLIT_COLUMNS))
        + "."
    ]
    scored = [c for c in cross if c]
    if scored:
        summary.append(
            f"\nWorld B ({len(scored)} experiments), median [min, max] of each arm's mIoU over all / "
            "trained / new names:\n\n| arm | " + " | ".join(CROSS_COLUMNS) + " |\n|---|---:|---:|---:|"
        )
        for k, label in enumerate(ARMS.values()):
            summary.append(
                f"| {label} | "
                + " | ".join(
                    f"{statistics.median(c[k][col] for c in scored):.1f} [{min(c[k][col] for c in scored):.1f}, "
                    f"{max(c[k][col] for c in scored):.1f}]"
                    for col in CROSS_COLUMNS
                )
                + " |"
            )
    return "\n".join([head, *lines, *summary]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="a saved `dvc exp show --json` (default: run it here)")
    ap.add_argument("--params", default="params.yaml", help="whose world.unseen is the default split")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    text = (
        Path(args.json).read_text()
        if args.json
        else subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True).stdout
    )
    runs = experiments(json.loads(text))
    if not runs:
        raise SystemExit("no finished experiment with metrics; run `make sweep` and wait for `dvc queue status`")
    default = yaml.safe_load(Path(args.params).read_text())["world"]["unseen"]
    out = table(runs, default)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out)
    print(out)


if __name__ == "__main__":
    main()
