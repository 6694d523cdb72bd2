"""The docs say what the repository has: generated parts equal their record, relative links and #anchors resolve,
every `c2s ...` line of a code block names a command that exists, and the README stays short."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from c2s_pipeline.stages import docs

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# a command, up to && ; or #
CALL = re.compile(r"(?:^|&&|;)\s*c2s\s+([^&;#]*)|-m c2s_pipeline\.stages\.cli\s+([^&;#]*)")


def _blocks(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(lines outside fenced code blocks, [(language, line) inside them])."""
    prose, code, language = [], [], None
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence.group(1)
        elif language is None:
            prose.append(line)
        else:
            code.append((language, line))
    return prose, code


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose, _ = _blocks(path.read_text())
    seen, anchors = {}, set()
    for line in prose:
        if re.match(r"^#{1,6} ", line):
            base = _anchor(line)
            anchors.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    prose, _ = _blocks(path.read_text())
    text = re.sub(r"`[^`]*`", "", "\n".join(prose))  # links are not read inside inline code
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def _cli_lines() -> list[tuple[str, str]]:
    """(page, words) of every `c2s ...` or `-m c2s_pipeline.stages.cli ...` call in a fenced code block, command
    words only."""
    calls = set()
    for page in PAGES:
        _, code = _blocks(page.read_text())
        for language, line in code:
            if language == "mermaid":
                continue
            line = line.strip().removeprefix("$ ")
            for match in CALL.finditer(line):
                words = []
                for word in (match.group(1) or match.group(2)).split():
                    if not re.fullmatch(r"[a-z][a-z-]*", word):
                        break
                    words.append(word)
                calls.add((str(page.relative_to(REPO)), " ".join(words[:2])))
    return sorted(calls)


def test_generated_parts_equal_what_c2s_docs_makes_of_the_record():
    stale = docs.run(REPO, check=True)
    assert not stale, (
        f"{', '.join(map(str, stale))} differ from what `c2s docs` generates from "
        f"{docs.RECORD} and dvc.yaml: run `c2s docs` (and never edit a generated number by hand)"
    )


@pytest.mark.parametrize("where", ["README.md", "docs/results.md"])
def test_a_number_edited_by_hand_fails_the_check(tmp_path, where):
    for rel in docs.INPUTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    assert docs.run(tmp_path, check=True) == []
    uiou = next(m["uIoU"] for m in json.loads((REPO / docs.RECORD).read_text())["models"] if m["name"] == "c2s")
    page = tmp_path / where
    text = page.read_text()
    assert f"| {uiou:.2f} |" in text
    page.write_text(text.replace(f"| {uiou:.2f} |", f"| {uiou + 1:.2f} |", 1))
    assert docs.run(tmp_path, check=True) == [Path(where)]


def test_the_pipeline_drawing_has_every_dvc_stage():
    stages = docs.dvc_stages((REPO / "dvc.yaml").read_text())
    drawing = docs.pipeline_diagram((REPO / "dvc.yaml").read_text())
    assert len(stages) >= 10 and all(f'["{name}<br/>' in drawing for name in stages)
    assert "precompute --> train_c2s" in drawing and "generate --> pretrain_teacher" in drawing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    dead = []
    for target in _links(page):
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            dead.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            dead.append(target)
    assert not dead, f"{page.relative_to(REPO)}: dead links {dead}"


@pytest.mark.parametrize("page,command", _cli_lines())
def test_every_c2s_line_in_a_code_block_names_a_command(page, command):
    from typer.testing import CliRunner

    from c2s_pipeline.stages.cli import app

    words = command.split()
    result = CliRunner().invoke(app, [*words, "--help"])
    if result.exit_code != 0 and len(words) > 1:  # `c2s predict IMG ...`: only the first word is a command
        result = CliRunner().invoke(app, [words[0], "--help"])
        is_group = "Commands" in result.output
        assert not is_group, f"{page}: `c2s {command}` names no subcommand of `c2s {words[0]}`"
    assert words and result.exit_code == 0, f"{page}: `c2s {command}` is no command ({result.output.strip()})"


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES}"


def test_a_demos_metrics_folder_becomes_the_record_and_the_pages(tmp_path):
    from c2s_pipeline.eval.report import write_per_class_csv

    for rel in docs.INPUTS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    metrics = tmp_path / "metrics"
    for k, name in enumerate(docs.DEMO_MODELS):
        values = {
            "name": name,
            "sIoU": 60.0 + k,
            "uIoU": 40.0 + k,
            "hIoU": 48.0 + k,
            "mIoU": 1.0,
            "pixel_acc": 2.0,
            "seen_as_unseen": 5.0,
            "unseen_as_seen": 6.0,
        }
        metrics.mkdir(exist_ok=True)
        (metrics / f"{name}.json").write_text(json.dumps(values))
        write_per_class_csv(
            [
                {"class": "red circle", "iou": 50.0 + k, "seen": False},
                {"class": "blue star", "iou": None, "seen": True},
            ],
            metrics / f"{name}.csv",
        )
        (metrics / f"{name}-on-world_b.json").write_text(
            json.dumps(
                {
                    "mIoU": 30.0 + k,
                    "mIoU_trained_names": 35.0 + k,
                    "mIoU_new_names": 20.0 + k,
                    "trained_names": 7,
                    "classes": 10,
                    "pixel_acc": 50.0,
                }
            )
        )
    stale = docs.run(tmp_path, metrics, wall_clock=["19:00", "21:00"])
    assert set(stale) == {docs.PAGE, docs.README}
    record = json.loads((tmp_path / docs.RECORD).read_text())
    assert record["provenance"]["command"] == "make demo" and "cores" in record["provenance"]["cpu"]
    assert record["per_class"] == [{"class": "red circle", "seen": False, "seen_only": 51.0, "c2s": 50.0}]
    assert "make_test" in record and docs.run(tmp_path, check=True) == []
    readme = (tmp_path / docs.README).read_text()
    assert "| C2S | 60.00 | 40.00 | 48.00 |" in readme and "20 min 0 s (median of 2 runs)" in readme
    page = (tmp_path / docs.PAGE).read_text()
    assert "| seen-only | 31.00 | 36.00 | 21.00 |" in page and "Of its 10 classes, 7 are named like" in page
