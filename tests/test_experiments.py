"""The sweep's table (benchmarks/experiments.py) from what `dvc exp show --json` reports."""

from __future__ import annotations

from benchmarks.experiments import experiments, table

DEFAULT = ["red circle", "green square"]


def exp(name: str, seed: int, unseen: list[str], c2s_u: float, seen_only_u: float, new_names: float | None) -> dict:
    metrics = {
        "metrics/c2s.json": {"data": {"sIoU": 60.0, "uIoU": c2s_u, "hIoU": 50.0}},
        "metrics/seen_only.json": {"data": {"sIoU": 61.0, "uIoU": seen_only_u, "hIoU": 30.0}},
        "metrics/report.md": {"error": {"type": "FileNotFoundError"}},
    }
    if new_names is not None:
        for arm, value in (("c2s", new_names), ("seen_only", new_names - 10), ("clip_dense", 5.0)):
            metrics[f"metrics/{arm}-on-world_b.json"] = {
                "data": {"mIoU": value + 1, "mIoU_trained_names": value + 2, "mIoU_new_names": value}
            }
    params = {"params.yaml": {"data": {"world": {"seed": seed, "unseen": unseen}}}}
    return {"revs": [{"rev": "abc", "name": name, "data": {"params": params, "metrics": metrics}}], "name": name}


def shown(*exps: dict) -> list[dict]:
    """The shape of `dvc exp show --json` (dvc 3): the workspace, then the baseline commit holding experiments;
    a queued experiment without metrics is left out."""
    queued = {"revs": [{"rev": "def", "name": "queued", "data": {"params": {}, "metrics": {}}}], "name": "queued"}
    return [
        {"rev": "workspace", "data": {"metrics": {}}, "experiments": None},
        {"rev": "c0ffee", "name": "main", "data": {}, "experiments": [*exps, queued]},
    ]


def test_each_finished_experiment_is_a_row_and_the_gap_its_median_and_range():
    runs = experiments(
        shown(
            exp("seed1", 1, DEFAULT, 50.0, 20.0, 30.0),
            exp("seed0", 0, DEFAULT, 45.0, 21.0, 20.0),
            exp("seed0-other", 0, ["blue star"], 40.0, 10.0, None),
        )
    )
    assert [r["name"] for r in runs] == ["seed1", "seed0", "seed0-other"]
    assert runs[0]["metrics"]["c2s-on-world_b"]["mIoU_new_names"] == 30.0 and "report" not in runs[0]["metrics"]
    text = table(runs, DEFAULT)
    rows = [line for line in text.splitlines() if line.startswith("| seed")]
    assert [r.split(" | ")[0] for r in rows] == ["| seed0", "| seed0-other", "| seed1"]  # by seed, then name
    assert "| 0 | other |" in rows[1] and rows[1].endswith("| -1.0 / +30.0 / +20.0 | - |")
    assert rows[2].endswith("| -1.0 / +30.0 / +20.0 | 30.0 / 20.0 / 5.0 |")
    # uIoU gaps 24, 30, 30: median +30.0, range [+24.0, +30.0]
    assert "uIoU +30.0 [+24.0, +30.0]" in text
    # world B over the two experiments that have it: C2S new names 20 and 30 -> median 25.0
    assert "| C2S | 26.0 [21.0, 31.0] | 27.0 [22.0, 32.0] | 25.0 [20.0, 30.0] |" in text
