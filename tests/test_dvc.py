"""`dvc repro` of the real dvc.yaml on a tiny params.yaml: cache reuse across student and teacher changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.experiments import experiments
from c2s_pipeline.cache.store import CacheReader

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"image_size": 64},
    "world": {"n_train": 8, "n_val": 4, "n_caption": 32, "image_size": 64},
    "teacher_pretrain": {"epochs": 1, "batch_size": 8, "warmup_steps": 1},
    "encoder_pretrain": {"steps": 2, "batch_size": 2},
    "teacher": {"batch_size": 4, "workers": 0, "device": "cpu"},
    "train": {
        "iterations": 3,
        "batch_size": 2,
        "num_workers": 0,
        "warmup_iters": 1,
        "checkpoint_every": 3,
        "device": "cpu",
    },
    "eval": {"fps_iters": 2, "fps_warmup": 1, "device": "cpu"},
}


def sh(cwd: Path, *args: str, stdout_only: bool = False) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def set_param(root: Path, section: str, key: str, value) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.slow
def test_repro_reuses_the_teacher_cache(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "c2s_pipeline", root / "c2s_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "config", "core.analytics", "false")

    first = sh(root, "dvc", "repro")
    for stage in (
        "generate",
        "pretrain_teacher",
        "pretrain_encoder",
        "precompute",
        "train_c2s",
        "train_seen_only",
        "generate_world_b",
        "vocab_world_b",
        "evaluate_world_b@c2s",
        "evaluate_clip_dense_world_b",
        "report",
    ):
        assert f"Running stage '{stage}'" in first
    assert (root / "metrics" / "report.md").exists()
    stores = sorted(p.name for p in (root / "data_cache").glob("*.zarr"))
    assert len(stores) == 2

    set_param(root, "train", "lr", 0.0003)  # a student parameter
    status = sh(root, "dvc", "status")
    assert "train_c2s" in status and "precompute" not in status and "pretrain_teacher" not in status
    second = sh(root, "dvc", "repro", "train_c2s")  # what follows it is dvc's own cascade
    assert "Running stage 'precompute'" not in second and "Running stage 'pretrain_teacher'" not in second
    assert "Running stage 'train_c2s'" in second
    assert sorted(p.name for p in (root / "data_cache").glob("*.zarr")) == stores

    set_param(root, "mining", "merge_threshold", 0.8)  # a teacher parameter
    third = sh(root, "dvc", "repro", "precompute")  # its students need not train here
    assert "Running stage 'precompute'" in third and "Running stage 'pretrain_teacher'" not in third
    now = sorted(p.name for p in (root / "data_cache").glob("*.zarr"))
    assert len(now) == 4 and set(stores) < set(now)
    for name in stores:  # the old stores stay valid
        assert CacheReader(root / "data_cache" / name).manifest["status"] == "complete"
    metrics = sh(root, "dvc", "metrics", "show")
    assert "hIoU" in metrics and "metrics/c2s.json" in metrics and "metrics/c2s-on-world_b.json" in metrics
    shown = json.loads(sh(root, "dvc", "metrics", "show", "--json"))
    values = [v for rev in shown.values() for file in rev["data"].values() for v in file["data"].values()]
    assert len(values) > 30 and all(isinstance(v, (int, float)) for v in values)  # numbers only
    plots = json.loads(sh(root, "dvc", "plots", "show", "--json"))
    assert not plots.get("errors") and "loss" in plots["data"]

    # A sweep is DVC experiments: an experiment's metrics (git-ignored, in DVC's cache) reach `dvc exp show`.
    (root / ".gitignore").write_text("data/\ndata_cache/\nmodels/\nmetrics/\n__pycache__/\n")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    sh(root, "dvc", "exp", "run", "-n", "lr2", "-S", "train.lr=0.0002")
    runs = experiments(json.loads(sh(root, "dvc", "exp", "show", "--json", stdout_only=True)))
    assert [r["name"] for r in runs] == ["lr2"]
    assert {"c2s", "seen_only", "c2s-on-world_b"} <= runs[0]["metrics"].keys()
