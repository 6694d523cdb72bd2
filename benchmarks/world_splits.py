"""C2S vs seen-only on several world seeds x unseen splits, and the ablation of the C2S terms.

    python -m benchmarks.world_splits --seeds 0 1 2 --out metrics/world_splits.md          # ~1.5 h on 2 cores
    python -m benchmarks.world_splits --seeds 0 --splits default --ablation --out metrics/ablation.md

Every arm runs the pipeline's own stages with params.yaml; one world, one teacher and (when
`student.encoder_weights` names a file, as params.yaml's does) one pretrained student encoder per seed (neither
depends on the split), one teacher store per (seed, split). Prints and writes markdown tables of sIoU / uIoU /
hIoU: per arm, mean and standard deviation over all (seed, split) pairs; then per run, with each arm minus
seen-only and those differences' mean and standard deviation. Runs already in --work are reused (resumed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from benchmarks import WORK
from c2s_pipeline.config import Params, load_params, override
from c2s_pipeline.engines.evaluate import evaluate_run
from c2s_pipeline.engines.precompute import build_store
from c2s_pipeline.engines.train import train_student
from c2s_pipeline.student.model import is_weights_file
from c2s_pipeline.world.encoder_pretrain import run_pretrain_encoder
from c2s_pipeline.world.generator import run_generate
from c2s_pipeline.world.teacher_pretrain import run_pretrain

SPLITS = {
    "default": None,  # world.unseen of params.yaml
    # one per shape again, other colours, so every unseen colour and shape still occurs among seen classes
    "other": ("green circle", "blue square", "yellow triangle", "red star", "green cross"),
}
# Arms of the same name share their run folder, so the ablation reuses the two-arm runs and vice versa.
# The distillation terms each arm switches on (seen-only: none, engines.train.baseline_params; c2s: all).
ABLATION = {
    name: {"use_global": "global" in on, "use_local": "local" in on, "use_latent": "latent" in on}
    for name, on in {
        "seen-only": (),
        "+ global": ("global",),
        "+ local": ("local",),
        "+ latent": ("latent",),
        "c2s": ("global", "local", "latent"),
    }.items()
}
ARMS = {arm: ABLATION[arm] for arm in ("seen-only", "c2s")}
COLUMNS = ("sIoU", "uIoU", "hIoU")


def run_pair(params: Params, work: Path, arms: dict[str, dict]) -> dict[str, dict]:
    """Precompute train/val for params, train and evaluate every arm; {arm: metrics}."""
    cache = work / "data_cache"
    for split in (params.data.train_split, params.data.val_split):
        build_store(params, split=split, cache_dir=cache)
    results = {}
    for name, switches in arms.items():
        slug = name.replace(" ", "").replace("+", "plus_").replace("(", "").replace(")", "")
        p = dataclasses.replace(params, loss=dataclasses.replace(params.loss, **switches))
        run_dir = train_student(p, work / "runs" / slug, cache_dir=cache)
        out = evaluate_run(p, run_dir, work / "metrics" / f"{slug}.json", cache_dir=cache)
        results[name] = json.loads(Path(out).read_text())
    return results


def table(rows: dict[str, list[dict]]) -> str:
    head = "| arm | runs | " + " | ".join(COLUMNS) + " |\n|---|---:|" + "---:|" * len(COLUMNS)
    lines = []
    for arm, runs in rows.items():
        cells = []
        for c in COLUMNS:
            values = [r[c] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join([head, *lines])


def per_run(runs: list[tuple[int, str]], rows: dict[str, list[dict]], base: str = "seen-only") -> str:
    """One row per (seed, split): every arm's sIoU / uIoU / hIoU and each other arm minus `base`, with the
    mean and standard deviation of those differences (paired: the same world, teacher and store)."""
    others = [arm for arm in rows if arm != base]
    head = (
        "| seed | split | "
        + " | ".join(rows)
        + " | "
        + " | ".join(f"{a} - {base}" for a in others)
        + " |\n"
        + "|---|---|"
        + "---|" * (len(rows) + len(others))
    )
    fmt = lambda m: " / ".join(f"{m[c]:.2f}" for c in COLUMNS)  # noqa: E731
    diffs = {a: [[r[c] - b[c] for c in COLUMNS] for r, b in zip(rows[a], rows[base])] for a in others}
    lines = [
        f"| {seed} | {split} | "
        + " | ".join(fmt(rows[a][i]) for a in rows)
        + " | "
        + " | ".join(" / ".join(f"{d:+.1f}" for d in diffs[a][i]) for a in others)
        + " |"
        for i, (seed, split) in enumerate(runs)
    ]
    if len(runs) > 1:
        spread = lambda xs: f"{statistics.mean(xs):+.1f} ± {statistics.stdev(xs):.1f}"  # noqa: E731
        lines.append(
            "| mean ± sd | | "
            + " | " * len(rows)
            + " | ".join(" / ".join(spread(col) for col in zip(*diffs[a])) for a in others)
            + " |"
        )
    return "\n".join([head, *lines])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    ap.add_argument("--ablation", action="store_true", help="all five arms of the ablation, not just two")
    ap.add_argument("--work", default=f"{WORK}/world_splits", help="worlds, teachers, stores and runs")
    ap.add_argument("--out", default="metrics/world_splits.md")
    args = ap.parse_args()
    base = load_params(args.params)
    arms = ABLATION if args.ablation else ARMS
    rows: dict[str, list[dict]] = {name: [] for name in arms}
    runs: list[tuple[int, str]] = []
    for seed in args.seeds:
        seed_dir = Path(args.work) / f"seed{seed}"
        params = override(
            base,
            world={"seed": seed},
            data={"root": str(seed_dir / "world")},
            teacher={"pretrained": str(seed_dir / "teacher" / "clip.pt")},
        )
        if not (seed_dir / "world" / "world.json").is_file():
            run_generate(params, seed_dir / "world")
        if not (seed_dir / "teacher" / "clip.pt").is_file():
            run_pretrain(params, seed_dir / "world", seed_dir / "teacher" / "clip.pt")
        if is_weights_file(params.student.encoder_weights):  # params.yaml's: each world its own encoder
            encoder = seed_dir / "encoder" / "encoder.pt"
            if not encoder.is_file():
                run_pretrain_encoder(params, seed_dir / "world", encoder)
            params = override(params, student={"encoder_weights": str(encoder)})
        for split in args.splits:
            p = params if SPLITS[split] is None else override(params, world={"unseen": list(SPLITS[split])})
            results = run_pair(p, seed_dir / split, arms)
            runs.append((seed, split))
            for name, metrics in results.items():
                rows[name].append(metrics)
                print(
                    f"seed {seed} split {split} {name}: " + ", ".join(f"{c} {metrics[c]:.2f}" for c in COLUMNS),
                    flush=True,
                )
    text = (
        f"seeds {args.seeds} x splits {args.splits}; mean ± standard deviation over the runs\n\n"
        + table(rows)
        + "\n\nPer run (sIoU / uIoU / hIoU):\n\n"
        + per_run(runs, rows)
        + "\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
