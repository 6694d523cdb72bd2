"""The `c2s` command line end to end on the tiny world: precompute -> train -> evaluate -> report -> predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from c2s_pipeline.stages.cli import app

runner = CliRunner()


def c2s(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_help_and_datasets():
    out = c2s("--help").output
    for command in ("precompute", "train", "evaluate", "predict", "vocab", "report", "cache", "world", "datasets"):
        assert command in out
    rows = [json.loads(line) for line in c2s("datasets").output.splitlines()]
    by_name = {r["dataset"]: r for r in rows}
    assert (by_name["voc"]["classes"], by_name["voc"]["unseen"]) == (20, 5)
    assert (by_name["context"]["classes"], by_name["context"]["unseen"]) == (59, 10)
    assert (by_name["cocostuff"]["classes"], by_name["cocostuff"]["unseen"]) == (171, 15)


@pytest.mark.slow
def test_pipeline_end_to_end(project):
    assert c2s("precompute", "--split", "train").exit_code == 0
    assert c2s("precompute", "--split", "val").exit_code == 0
    stores = [json.loads(x) for x in c2s("cache", "ls").output.splitlines()]
    assert sorted(s["split"] for s in stores) == ["train", "val"] and all(s["status"] == "complete" for s in stores)
    verify = c2s("cache", "verify", stores[0]["path"])
    assert verify.exit_code == 0 and json.loads(verify.output)["problems"] == []
    assert c2s("train", "--run", "models/c2s").exit_code == 0
    assert c2s("train", "--run", "models/seen_only", "--baseline").exit_code == 0
    for run in ("c2s", "seen_only"):
        assert c2s("evaluate", "--run", f"models/{run}").exit_code == 0
    assert c2s("evaluate", "--clip-baseline").exit_code == 0
    metrics = json.loads((project / "metrics" / "c2s.json").read_text())
    for key in ("mIoU", "sIoU", "uIoU", "hIoU", "pixel_acc", "seen_as_unseen", "unseen_as_seen", "fps", "params"):
        assert isinstance(metrics[key], (int, float))
    assert 0 <= metrics["sIoU"] <= 100 and metrics["fps"] > 0
    rows = (project / "metrics" / "c2s.csv").read_text().splitlines()
    assert rows[0] == "class,iou,seen" and len(rows) == 21
    report = c2s("report", "metrics/c2s.json", "metrics/seen_only.json", "metrics/clip_dense.json")
    assert report.exit_code == 0 and "| seen_only |" in report.output
    assert (project / "metrics" / "per_class_iou.png").stat().st_size > 0

    image = project / "example.jpg"
    Image.fromarray(np.full((96, 80, 3), 120, np.uint8)).save(image)
    out = c2s("predict", str(image), "--run", "models/c2s", "--out", "pred")
    assert out.exit_code == 0
    overlay = Image.open(project / "pred" / "example_overlay.png")
    assert overlay.size[0] > 80 and overlay.size[1] >= 96
    assert c2s("vocab", "red circle,purple hexagon", "-o", "vocab.pt").exit_code == 0
    assert c2s("predict", str(image), "--run", "models/c2s", "--vocab", "vocab.pt", "--out", "pred2").exit_code == 0
    missing = c2s("predict", str(image), "--run", "models/c2s", "--classes", "purple hexagon", "--out", "p3")
    assert missing.exit_code == 2 and "c2s vocab" in missing.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["precompute", "--root", "nowhere"], "nowhere/world.json not found; generate the world"),
        (["precompute", "--dataset", "voc", "--root", "nowhere"], "dataset root folder nowhere not found"),
        (["train", "--run", "models/x", "--arch", "segformer", "--cache", "missing.zarr"], "missing.zarr not found"),
        (["evaluate", "--run", "models/none"], "student.pt not found; train it with `c2s train"),
        (["precompute", "--pretrained", "ghost.pt"], "checkpoint file ghost.pt not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project, args, message):
    result = c2s(*args)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1


def test_unknown_params_key_is_named(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["learning_rate"] = 1.0
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    result = c2s("train")
    assert result.exit_code == 2 and "unknown key(s) train.learning_rate" in result.output


@pytest.mark.parametrize(
    "flag, expected",
    [
        ([], "models/encoder/encoder.pt"),
        (["--encoder-weights", "none"], None),
        (["--encoder-weights", "imagenet"], "imagenet"),
    ],
)
def test_train_encoder_weights_flag_sets_none_a_name_or_keeps_the_params_file(monkeypatch, flag, expected):
    from c2s_pipeline.stages import train

    seen = []
    monkeypatch.setattr(train, "run", lambda p, run, **k: seen.append(p.student.encoder_weights) or run)
    assert c2s("train", *flag).exit_code == 0
    assert seen == [expected]
