"""dvc.yaml's deps cover the code each stage runs: every project module its command imports, found from the
import graph, lies under one of the stage's deps. Otherwise `dvc repro` would serve stale models and metrics."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("c2s_pipeline",)
COMMANDS = {
    command: f"c2s_pipeline.stages.{module}"
    for command, module in {
        "world generate": "world",
        "world pretrain-teacher": "world",
        "world pretrain-encoder": "encoder_pretrain",
        "world diagnose": "diagnose",
        "precompute": "precompute",
        "train": "train",
        "evaluate": "evaluate",
        "report": "report",
        "vocab": "cross",
    }.items()
}


def module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported(path: Path, top_level_only: bool = False) -> set[str]:
    """Project modules `path` imports anywhere in its body (function-level imports too, unless top_level_only)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n)}


def closure(entry: str) -> set[Path]:
    """Files of `entry`, of every project module it reaches, and of their parent packages."""
    todo, seen = sorted(imported(module_file(entry))), {entry}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts)) if module_file(".".join(parts[:k]))]
        todo += sorted(imported(module_file(name)))
    return {module_file(n).relative_to(REPO) for n in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def commands(cmd: str) -> set[str]:
    """The stage modules of every `c2s ...` call in a stage's cmd."""
    words = cmd.replace("&&", " ").split()
    calls = [" ".join(words[i + 1 : i + 3]) for i, w in enumerate(words[:-1]) if w == "c2s"]
    modules = {module for call in calls for key, module in COMMANDS.items() if f"{call} ".startswith(f"{key} ")}
    if "--dataset" in words and any(call.startswith("evaluate") for call in calls):
        modules.add("c2s_pipeline.stages.cross")  # cross-dataset evaluation
    return modules


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_every_module_its_command_imports(name):
    stage = stages()[name]
    stage = stage.get("do", stage)  # foreach stages
    deps = [Path(str(d).split()[0]) for d in stage.get("deps", [])]
    entries = commands(stage["cmd"])
    assert entries, f"stage {name}: no known c2s command in {stage['cmd']!r}"
    # The CLI module itself dispatches each command to its stage through imports inside the command
    # functions, so only its module-level imports are common to every stage.
    cli = module_file("c2s_pipeline.stages.cli")
    needed = {cli.relative_to(REPO)}.union(
        *(closure(m) for m in imported(cli, top_level_only=True)), *(closure(e) for e in entries)
    )
    missing = sorted(str(f) for f in needed if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"stage {name} does not depend on: {', '.join(missing)}"


def test_the_import_graph_is_followed():
    files = closure("c2s_pipeline.stages.train")
    assert Path("c2s_pipeline/student/task.py") in files and Path("c2s_pipeline/config.py") in files
    assert Path("c2s_pipeline/__init__.py") in files
    assert Path("c2s_pipeline/world/teacher_pretrain.py") not in files  # training never needs the world's CLIP
