"""params.yaml is the one set of defaults: the dataclasses hold the same values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from c2s_pipeline.config import Params, flatten, load_params, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_is_the_codes_defaults():
    in_file, in_code = flatten(to_dict(load_params(REPO / "params.yaml"))), flatten(to_dict(Params()))
    differ = {k: (in_code.get(k), in_file.get(k)) for k in in_file.keys() | in_code.keys()
              if in_file.get(k) != in_code.get(k)}
    assert not differ, f"code default vs params.yaml: {differ}"
    stated = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert stated.keys() == in_code.keys(), "params.yaml states every key"


def test_paper_files_are_not_the_world():
    for path in REPO.glob("params-*.yaml"):     # self-contained: tests/test_paper_settings.py
        assert load_params(path).data.dataset != "world"


def test_a_missing_params_file_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stages.cli", "train"], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: params file params.yaml not found; run c2s in the project folder (where params.yaml "
                     "is) or pass --params PATH"], result.stderr
    assert not (tmp_path / "models").exists()
