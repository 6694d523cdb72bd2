"""params.yaml is the one set of defaults: the dataclasses hold the same values."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from c2s_pipeline.config import ConfigError, Params, flatten, load_params, params_from_dict, to_dict

REPO = Path(__file__).resolve().parents[1]


def path_keys() -> set[str]:
    return {
        f"{s.name}.{f.name}"
        for s in dataclasses.fields(Params)
        for f in dataclasses.fields(s.default_factory())
        if f.metadata.get("path")
    }


def test_params_yaml_is_the_codes_defaults_but_for_paths():
    in_file, in_code = flatten(to_dict(load_params(REPO / "params.yaml"))), flatten(to_dict(Params()))
    differ = {
        k: (in_code.get(k), in_file.get(k))
        for k in in_file.keys() | in_code.keys()
        if in_file.get(k) != in_code.get(k) and k not in path_keys()
    }
    assert not differ, f"code default vs params.yaml: {differ}"
    stated = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert stated.keys() == in_code.keys(), "params.yaml states every key"


def test_the_library_names_no_project_path():
    assert path_keys() == {"data.root", "teacher.pretrained", "student.encoder_weights"}
    defaults = flatten(to_dict(Params()))
    assert {k: defaults[k] for k in path_keys()} == {
        "data.root": "",
        "teacher.pretrained": "",
        "student.encoder_weights": None,
    }
    assert [p for p in path_keys() if "/" in str(flatten(yaml.safe_load((REPO / "params.yaml").read_text()))[p])]


@pytest.mark.parametrize("key", ["data.root", "teacher.pretrained"])
def test_a_params_file_must_name_the_data_and_the_teacher(key):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    section, name = key.split(".")
    del raw[section][name]
    with pytest.raises(ConfigError, match=rf"^{key} is not set: give "):
        params_from_dict(raw)


@pytest.mark.parametrize("path", sorted(REPO.glob("benchmarks/*.yaml")), ids=lambda p: p.name)
def test_every_benchmark_params_file_loads_and_names_its_paths(path):
    raw = yaml.safe_load(path.read_text())
    params = load_params(path)  # data.root and teacher.pretrained stated, every value in range
    assert params.data.root == raw["data"]["root"] and params.teacher.pretrained == raw["teacher"]["pretrained"]


def test_paper_files_are_not_the_world():
    for path in REPO.glob("params-*.yaml"):  # self-contained: tests/test_paper_settings.py
        assert load_params(path).data.dataset != "world"


def test_a_missing_params_file_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "c2s_pipeline.stages.cli", "train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: params file params.yaml not found; run c2s in the project folder (where params.yaml "
        "is) or pass --params PATH"
    ], result.stderr
    assert not (tmp_path / "models").exists()
