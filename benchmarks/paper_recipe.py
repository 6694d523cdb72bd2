"""The paper files' loss recipe on the world: which seen logits and which calibration it supports.

    python -m benchmarks.paper_recipe --work data/benchmarks/world_splits --seed 0      # ~30-45 min on 2 cores

Students are trained on one seed's world (its teacher and encoder as `benchmarks.world_splits` makes them) with
the paper files' loss (focal x 100 + dice + one pooled cross-entropy) and either seen logits: the cosine
(tau 50) or the paper's alpha F^T A_s (alpha 1: the raw features' norm is the scale; at 50 a fresh student's
logits start near +-900), and a seen-only student (cosine) as the reference (`--arms 2` leaves it out). Each
student is evaluated with softmax and with sigmoid calibration (seen bias 0.1). Everything else is params.yaml's.
Runs already in --work are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import WORK
from c2s_pipeline.config import load_params, override
from c2s_pipeline.engines.evaluate import evaluate_run
from c2s_pipeline.engines.precompute import build_store
from c2s_pipeline.engines.train import baseline_params, train_student

PAPER_LOSS = {"focal_weight": 100.0, "dice_weight": 1.0, "ce_weight": 1.0, "ce_reduction": "pooled"}
LOGITS = {"cosine": {"seen_logits": "cosine", "logit_scale": 50.0}, "dot": {"seen_logits": "dot", "logit_scale": 1.0}}
ARMS = (("c2s", "cosine"), ("c2s", "dot"), ("seen-only", "cosine"))  # --arms 2: the C2S students only
COLUMNS = ("sIoU", "uIoU", "hIoU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default=f"{WORK}/world_splits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="metrics/paper_recipe.md")
    ap.add_argument("--arms", type=int, default=len(ARMS), help="train the first N of C2S-cosine, C2S-dot, seen-only")
    args = ap.parse_args()
    seed_dir = Path(args.work) / f"seed{args.seed}"
    base = override(
        load_params(args.params),
        world={"seed": args.seed},
        data={"root": str(seed_dir / "world")},
        teacher={"pretrained": str(seed_dir / "teacher" / "clip.pt")},
        student={"encoder_weights": str(seed_dir / "encoder" / "encoder.pt")},
        loss=PAPER_LOSS,
    )
    work = seed_dir / "paper_recipe"
    cache = work / "data_cache"
    for split in (base.data.train_split, base.data.val_split):
        build_store(base, split=split, cache_dir=cache)
    rows = []
    for arm, logits in ARMS[: args.arms]:
        p = override(base, student=LOGITS[logits])
        p = baseline_params(p) if arm == "seen-only" else p
        run_dir = train_student(p, work / "runs" / f"{arm}-{logits}", cache_dir=cache)
        for calibration in ("softmax", "sigmoid"):
            q = override(p, eval={"calibration": calibration})
            out = evaluate_run(q, run_dir, work / "metrics" / f"{arm}-{logits}-{calibration}.json", cache_dir=cache)
            m = json.loads(Path(out).read_text())
            rows.append(f"| {arm} | {logits} | {calibration} | " + " | ".join(f"{m[c]:.2f}" for c in COLUMNS) + " |")
            print(rows[-1], flush=True)
    text = (
        f"World seed {args.seed}, default split; loss {PAPER_LOSS}; seen bias {base.eval.seen_bias}.\n\n"
        "| arm | seen logits | calibration | sIoU | uIoU | hIoU |\n|---|---|---|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
