"""The library reads one way: config, files and runtime -> data -> cache -> teacher | student -> eval
-> engines -> world (the world is a plug-in above the core, which never imports it) -> stages (the commands).
No module imports one of a higher layer or a sibling of its own layer, and no import circle exists,
function-level imports included. A stage imports no other stage but the shared `stages.common` (and the CLI,
which dispatches to them all)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = {
    "c2s_pipeline": 0,
    "c2s_pipeline.config": 0,
    "c2s_pipeline.files": 0,
    "c2s_pipeline.runtime": 0,
    "c2s_pipeline.data": 1,
    "c2s_pipeline.cache": 2,
    "c2s_pipeline.teacher": 3,
    "c2s_pipeline.student": 3,
    "c2s_pipeline.eval": 4,
    "c2s_pipeline.engines": 5,
    "c2s_pipeline.world": 6,
    "c2s_pipeline.stages": 7,
}
STAGES_SHARED = {"c2s_pipeline.stages", "c2s_pipeline.stages.common", "c2s_pipeline.stages.distributed"}


def modules() -> dict[str, Path]:
    return {
        ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): f
        for f in (REPO / "c2s_pipeline").rglob("*.py")
    }


def imports() -> dict[str, set[str]]:
    """Module -> the library modules it imports anywhere in its body."""
    mods, edges = modules(), defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges[name] |= {f for f in found if f in mods and f != name}
    return edges


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or ".".join(parts[:2]) in LAYERS else module


def test_every_library_module_has_a_layer():
    assert not [m for m in modules() if package(m) not in LAYERS]


def test_no_upward_or_sideways_import():
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in imports().items()
        for t in targets
        if package(t) != package(m) and LAYERS[package(t)] >= LAYERS[package(m)]
    )
    assert not wrong, "imports against the layers: " + "; ".join(wrong)


def test_no_import_circle():
    edges, state, circles = imports(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t) :] + [m, t]) if t in path else f"{m} -> {t}")
            elif t not in state:
                visit(t, path + [m])
        state[m] = "done"

    for m in sorted(modules()):
        if m not in state:
            visit(m, [])
    assert not circles, circles


def test_a_stage_imports_no_other_stage():
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in imports().items()
        for t in targets
        if package(m) == package(t) == "c2s_pipeline.stages"
        and m != "c2s_pipeline.stages.cli"
        and t not in STAGES_SHARED
    )
    assert not wrong, "a stage imports another: " + "; ".join(wrong)
