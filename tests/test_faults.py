"""Hostile, damaged and mismatched files, as a user would meet them: refused with one line, nothing in them runs.

The CLI runs as a real subprocess here because what the user sees (exit code, one line, no traceback)
and whether a crafted pickle ran code on this machine are the point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from PIL import Image

from c2s_pipeline.cache.store import CacheReader
from c2s_pipeline.config import ConfigError, Params, load_params, to_dict
from c2s_pipeline.stages import precompute, train
from c2s_pipeline.student.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    STUDENT_FILE,
    CheckpointError,
    RunRecord,
    run_store,
    safe_load,
)
from c2s_pipeline.teacher.identity import locate_store

pytestmark = pytest.mark.slow  # the CLI in subprocesses, stores and trainings: `make test-fast` skips them

REPO = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")  # stages/common.py setup_logging
PROGRESS = re.compile(r"\[\d+:\d\d[<,\]]")  # a tqdm bar: "[00:01<00:02, ..."
REFUSED = "is not a safe c2s"
CORRUPT = "corrupt or truncated"


class WritesMarker:
    """Unpickling this touches `marker`: it stands in for any code a crafted file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def craft(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A file that runs code when loaded with full pickle; torch.save's zip format or a bare pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": WritesMarker(marker), "iteration": 0}
    if legacy:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


def c2s(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`c2s ARGS` in a fresh interpreter on this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "c2s_pipeline.stages.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line the user gets: exit 2, nothing on stdout, and stderr is log lines (and progress bars) plus
    that line only."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    other = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not LOG_LINE.match(line) and not PROGRESS.search(line)
    ]
    assert len(other) == 1 and other[0].startswith("error: "), result.stderr
    return other[0]


@pytest.fixture
def image(project) -> Path:
    path = project / "example.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def built(project_params, tmp_path_factory) -> Path:
    """The train store and a trained student, computed once for this module and copied into each project."""
    root = tmp_path_factory.mktemp("built")
    precompute.run(project_params, split="train", cache_dir=root / "data_cache")
    train.run(project_params, root / "models" / "c2s", cache_dir=root / "data_cache")
    return root


@pytest.fixture
def stored(built, project) -> Path:
    """The project with the teacher store of its train split."""
    shutil.copytree(built / "data_cache", project / "data_cache")
    return project


@pytest.fixture
def trained(built, stored) -> Path:
    """The project with the store and a trained student in models/c2s."""
    shutil.copytree(built / "models", stored / "models")
    return stored


@pytest.mark.parametrize(
    "command, legacy",
    [("evaluate", False), ("predict", False), ("evaluate", True)],
    ids=["evaluate", "predict", "evaluate-bare-pickle"],
)
def test_crafted_student_is_refused_and_runs_nothing(project, image, tmp_path, command, legacy):
    marker = tmp_path / "marker"
    craft(project / "models" / "evil" / STUDENT_FILE, marker, legacy)
    args = (
        ["evaluate", "--run", "models/evil"]
        if command == "evaluate"
        else ["predict", str(image), "--run", "models/evil"]
    )
    result = c2s(project, *args)
    assert not marker.exists(), "the crafted student.pt ran code"
    line = error_line(result)
    assert REFUSED in line and "c2s train" in line


def test_crafted_vocab_is_refused_and_runs_nothing(trained, image, tmp_path):
    marker = tmp_path / "marker"
    craft(trained / "evil_vocab.pt", marker)
    result = c2s(trained, "predict", str(image), "--run", "models/c2s", "--vocab", "evil_vocab.pt")
    assert not marker.exists(), "the crafted vocab.pt ran code"
    line = error_line(result)
    assert REFUSED in line and "c2s vocab" in line and not (trained / "predictions").exists()


def test_crafted_checkpoint_is_refused_on_resume_and_runs_nothing(stored, tmp_path):
    marker = tmp_path / "marker"
    ckpt = craft(stored / "models" / "c2s" / CHECKPOINT_FILE, marker)
    before = ckpt.read_bytes()
    result = c2s(stored, "train", "--run", "models/c2s")
    assert not marker.exists(), "the crafted checkpoint.pt ran code"
    line = error_line(result)
    assert REFUSED in line and "--no-resume" in line
    # Nothing in the run folder was touched: the refused file stays for inspection, no config was written.
    assert ckpt.read_bytes() == before and not (stored / "models" / "c2s" / CONFIG_FILE).exists()


@pytest.mark.parametrize("kind", ["student", "checkpoint", "vocab"])
def test_truncated_files_are_one_line(trained, image, kind):
    run = trained / "models" / "c2s"
    target, args, fix = {
        "student": (run / STUDENT_FILE, ["evaluate", "--run", "models/c2s"], "c2s train"),
        "checkpoint": (run / CHECKPOINT_FILE, ["train", "--run", "models/c2s"], "--no-resume"),
        "vocab": (
            trained / "vocab.pt",
            ["predict", str(image), "--run", "models/c2s", "--vocab", "vocab.pt"],
            "c2s vocab",
        ),
    }[kind]
    data = (run / STUDENT_FILE if kind == "vocab" else target).read_bytes()  # any real torch file will do
    target.write_bytes(data[: len(data) // 2])
    line = error_line(c2s(trained, *args))
    assert CORRUPT in line and fix in line


@pytest.mark.parametrize(
    "flags, differs",
    [
        (["--seed", "1"], "train.seed 0 -> 1"),
        (["--arch", "fpn"], "student.arch 'segformer' -> 'fpn'"),
        (["--baseline"], "loss.use_global True -> False"),
    ],
    ids=["seed", "arch", "baseline"],
)
def test_resume_under_other_settings_is_refused(trained, flags, differs):
    run = trained / "models" / "c2s"
    kept = {name: (run / name).read_bytes() for name in (CHECKPOINT_FILE, CONFIG_FILE, STUDENT_FILE, LOG_FILE)}
    line = error_line(c2s(trained, "train", "--run", "models/c2s", *flags))
    assert "written under other settings" in line and differs in line and "--no-resume" in line
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_resume_may_grow_iterations_only(trained, project_params):
    run = trained / "models" / "c2s"
    longer = dataclasses.replace(project_params, train=dataclasses.replace(project_params.train, iterations=6))
    train.run(longer, run, cache_dir=trained / "data_cache")
    logged = [json.loads(x)["iter"] for x in (run / LOG_FILE).read_text().splitlines()]
    assert logged == list(range(1, 7))
    with pytest.raises(CheckpointError, match=r"train.iterations 6 -> 4 \(it may only grow\)"):
        train.run(project_params, run, cache_dir=trained / "data_cache")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + b"\0" * 64], ids=["empty", "broken-zip"])
def test_unreadable_files_are_named_corrupt(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=CORRUPT):
        safe_load(tmp_path / "x.pt", "student", "retrain it")


def test_safe_load_refuses_before_anything_runs(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointError, match=REFUSED):
        safe_load(craft(tmp_path / "x.pt", marker), "student", "retrain it")
    assert not marker.exists()


def test_safe_load_names_a_file_of_another_kind(tmp_path):
    torch.save({"visual.proj": torch.zeros(2, 2)}, tmp_path / "teacher.pt")  # a CLIP state_dict, say
    with pytest.raises(CheckpointError, match="not a c2s student file .*state_dict"):
        safe_load(tmp_path / "teacher.pt", "student", "retrain it", keys=("state_dict", "config"))


# --- a store is what it claims to be: the data it was computed from, the settings, the split -------------------


@pytest.fixture
def own_world(stored, project_params) -> Path:
    """The stored project on its own copy of the world (mtimes kept), so its files may be changed."""
    shutil.copytree(project_params.data.root, stored / "world")
    params = dataclasses.replace(project_params, data=dataclasses.replace(project_params.data, root="world"))
    (stored / "params.yaml").write_text(yaml.safe_dump(to_dict(params)))
    return stored


def invert_images(world: Path) -> None:
    for path in sorted((world / "JPEGImages").glob("*.jpg")):
        Image.fromarray(255 - np.asarray(Image.open(path).convert("RGB"))).save(path, quality=95)


def relabel_one(world: Path) -> None:
    path = sorted((world / "SegmentationClass").glob("*.png"))[0]
    label = np.asarray(Image.open(path)).copy()
    label[label == label.max()] = 1 if label.max() != 1 else 2  # another class where the image's last one was
    Image.fromarray(label, mode="L").save(path)


@pytest.mark.parametrize("change", [invert_images, relabel_one], ids=["inverted-images", "one-relabelled"])
def test_store_of_changed_data_is_never_reused(own_world, change):
    """A store never outlives its data: changed files address a new store; the old one is refused and kept."""
    old = only_store(own_world / "data_cache")
    before = tree_digest(old)
    change(own_world / "world")
    line = error_line(c2s(own_world, "train", "--run", "models/c2s", "--cache", str(old)))
    assert "images or labels of split 'train' changed" in line and "c2s precompute --split train" in line, line
    line = error_line(c2s(own_world, "train", "--run", "models/c2s"))
    assert "not found" in line and "c2s precompute" in line, line
    assert not (own_world / "models").exists()
    done = c2s(own_world, "precompute", "--split", "train")
    n = len(list((own_world / "world" / "JPEGImages").glob("train_*.jpg")))
    assert done.returncode == 0 and f"0/{n} images done, {n} to compute" in done.stderr, done.stderr
    stores = [p for p in (own_world / "data_cache").iterdir() if p.suffix == ".zarr"]
    assert len(stores) == 2 and tree_digest(old) == before


def test_train_cache_flag_gets_the_located_checks(stored, project_params):
    other = dataclasses.replace(project_params, mining=dataclasses.replace(project_params.mining, merge_threshold=0.5))
    other_store = precompute.run(other, split="train", cache_dir=stored / "other_cache")
    val_store = precompute.run(project_params, split="val", cache_dir=stored / "data_cache")
    other_split = dataclasses.replace(
        project_params,
        world=dataclasses.replace(
            project_params.world, unseen=("green circle", "blue square", "yellow triangle", "red star", "green cross")
        ),
    )
    split_store = precompute.run(other_split, split="train", cache_dir=stored / "split_cache")
    for store, differs in (
        (other_store, "mining.merge_threshold 0.5 -> 0.9"),
        (val_store, "split 'val' -> 'train'"),
        (split_store, "unseen [1, 6, 11, 12, 17] -> [0, 5, 10, 15, 16]"),
    ):
        before = tree_digest(store)
        line = error_line(c2s(stored, "train", "--run", "models/x", "--cache", str(store)))
        assert "computed under other settings" in line and differs in line, line
        assert tree_digest(store) == before and not (stored / "models" / "x").exists()


def only_store(cache_dir: Path) -> Path:
    (store,) = [p for p in cache_dir.iterdir() if p.suffix in (".zarr", ".h5")]
    return store


def tree_digest(path: Path) -> dict:
    """Every file of a store (or the file itself) -> (bytes digest, mtime_ns): equal means nothing was written."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}


# --- precompute: one writer, no half-created store, nothing written when nothing is left to do -----------------


def test_second_precompute_on_a_locked_store_is_refused(project, project_params):
    import fcntl

    path, _ = locate_store(project_params, "train", project / "data_cache")
    path.parent.mkdir()
    with open(f"{path}.lock", "a") as held:  # what a running precompute of this store holds
        fcntl.flock(held, fcntl.LOCK_EX)
        line = error_line(c2s(project, "precompute", "--split", "train"))
    assert "being written by another c2s precompute" in line, line
    assert not path.exists()


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_half_created_store_is_recreated(project_params, tmp_path, fmt):
    params = dataclasses.replace(project_params, teacher=dataclasses.replace(project_params.teacher, store_format=fmt))
    path, _ = locate_store(params, "val", tmp_path)
    if fmt == "zarr":
        zarr.create_group(store=str(path), zarr_format=3)  # killed before its manifest was written
    else:
        path.with_name(path.name + ".partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # killed mid-creation
    assert precompute.run(params, split="val", cache_dir=tmp_path) == path
    assert CacheReader(path).manifest["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f"{path.name}.lock", "world-val.json"])


def test_precompute_with_nothing_to_do_writes_nothing(stored, project_params, monkeypatch):
    store = only_store(stored / "data_cache")
    before = tree_digest(stored / "data_cache")
    monkeypatch.setattr(
        "c2s_pipeline.engines.precompute.load_clip", lambda *a, **k: pytest.fail("CLIP loaded for a complete store")
    )
    assert precompute.run(project_params, split="train", cache_dir=stored / "data_cache") == store
    assert tree_digest(stored / "data_cache") == before  # store, pointer, lock: nothing written


# --- params: one line naming the key and what is allowed ---------------------------------------------------------


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "batch_size", 0, "train.batch_size: 0 is out of range; allowed: >= 1"),
        ("train", "iterations", -5, "train.iterations: -5 is out of range; allowed: >= 1"),
        ("train", "checkpoint_every", 0, "train.checkpoint_every: 0 is out of range; allowed: >= 1"),
        ("data", "image_size", 0, "data.image_size: 0 is out of range; allowed: >= 32"),
        ("loss", "bank_size", -1, "loss.bank_size: -1 is out of range; allowed: >= 0"),
        ("loss", "temperature", 0.0, "loss.temperature: 0.0 is out of range; allowed: > 0"),
        ("teacher", "max_regions", 300, "teacher.max_regions: 300 is out of range; allowed: >= 1 and <= 255"),
        ("teacher", "view_crops", [0.75, 1.5], "teacher.view_crops: 1.5 is out of range; allowed: > 0 and < 1"),
        ("teacher", "dense_tokens", "train", "teacher.dense_tokens: 'train' is not one of eval, all"),
        ("world", "unseen", [], "world.unseen: the list is empty; it needs at least one value"),
        ("mining", "window_sizes", [], "mining.window_sizes: the list is empty; it needs at least one value"),
        ("train", "lr", float("nan"), "train.lr: nan is not a finite number"),
        ("student", "logit_scale", float("inf"), "student.logit_scale: inf is not a finite number"),
        ("teacher", "view_crops", [float("nan")], "teacher.view_crops: nan is not a finite number"),
        ("mining", "merge_threshold", float("nan"), "mining.merge_threshold: nan is not a finite number"),
        ("eval", "seen_bias", float("nan"), "eval.seen_bias: nan is not a finite number"),
        ("teacher", "view_crops", [1.0], "teacher.view_crops: 1.0 is out of range; allowed: > 0 and < 1"),
        (
            "data",
            "image_size",
            100,
            "data.image_size: 100 is not a multiple of 32 (the student's encoders downsample by 32)",
        ),
        ("mining", "kmeans_iters", 0, "mining.kmeans_iters: 0 is out of range; allowed: >= 1"),
        ("train", "seed", -1, "train.seed: -1 is out of range; allowed: >= 0"),
        ("teacher", "store_format", "parquet", "teacher.store_format: 'parquet' is not one of zarr, h5"),
        ("teacher", "templates", "many", "teacher.templates: 'many' is not one of auto, single, ensemble"),
        (
            "teacher",
            "dense_mode",
            "dino",
            "teacher.dense_mode: 'dino' is not one of maskclip, clearclip, sclip, standard",
        ),
        ("eval", "mode", "tiles", "eval.mode: 'tiles' is not one of whole, slide"),
        ("train", "device", "gpu0", "train.device: 'gpu0' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("teacher", "device", "cuda:x", "teacher.device: 'cuda:x' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("data", "dataset", "ade", "data.dataset: 'ade' is not one of world, voc, context, cocostuff, ade20k, folder"),
        ("train", None, 5, "train: expected a mapping of keys, got 5"),
        ("train", None, [], "train: expected a mapping of keys, got []"),  # empty, but not a mapping either
    ],
)
def test_params_out_of_range_name_the_key_and_range(tmp_path, section, key, value, message):
    raw = to_dict(Params())
    if key is None:
        raw[section] = value
    else:
        raw[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "params.yaml")
    assert str(err.value) == message


def test_bad_params_are_one_line_from_the_cli(project):
    assert "train.batch_size: 0 is out of range; allowed: >= 1" in error_line(
        c2s(project, "train", "--run", "models/x", "--batch-size", "0")
    )
    (project / "params.yaml").write_text("train:\n  iterations: 4\n lr: [0.1\n")
    line = error_line(c2s(project, "train", "--run", "models/x"))
    assert "params.yaml is not valid YAML at line 3" in line, line
    assert not (project / "models").exists()


# --- errors in DataLoader workers, unwritable outputs, a full disk, damaged chunks -------------------------------


def set_params(project: Path, **sections) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))


def damage_keeping_stat(path: Path) -> None:
    """Garbage of the same size and mtime: the store's data digest cannot see it, the decoder can."""
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("command", ["precompute", "train"])
def test_error_in_a_dataloader_worker_is_one_line(own_world, command):
    set_params(own_world, teacher={"workers": 1}, train={"num_workers": 1})
    image = sorted((own_world / "world" / "JPEGImages").glob("*.jpg"))[0]
    if command == "precompute":
        shutil.rmtree(own_world / "data_cache")
        image.write_bytes(image.read_bytes()[:100])  # truncated
        args = ["precompute", "--split", "train"]
    else:
        damage_keeping_stat(image)
        args = ["train", "--run", "models/c2s"]
    line = error_line(c2s(own_world, *args))
    assert f"image {Path('world') / 'JPEGImages' / image.name} is corrupt or truncated" in line, line


def test_unwritable_run_folder_is_one_line(stored):
    (stored / "blocker").write_text("a file where the run folder's parent should be")
    line = error_line(c2s(stored, "train", "--run", "blocker/run"))
    assert "cannot use blocker/run" in line and "Not a directory" in line, line


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(trained, project_params, monkeypatch):
    import errno

    from c2s_pipeline.student import loop

    run = trained / "models" / "c2s"
    before = {name: (run / name).read_bytes() for name in (CHECKPOINT_FILE, STUDENT_FILE)}

    def full_disk(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop.torch, "save", full_disk)
    longer = dataclasses.replace(project_params, train=dataclasses.replace(project_params.train, iterations=6))
    with pytest.raises(
        CheckpointError,
        match=r"cannot write .*checkpoint.pt \(No space left on device\); "
        "the previous checkpoint.pt is kept",
    ):
        train.run(longer, run, cache_dir=trained / "data_cache")
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not list(run.glob("*.tmp"))


def test_cache_verify_lists_a_corrupt_chunk_and_ls_names_a_missing_folder(stored):
    store = only_store(stored / "data_cache")
    chunk = store / "local_cls" / "c" / "2" / "0" / "0"
    chunk.write_bytes(b"\xff" * 7)
    result = c2s(stored, "cache", "verify", str(store))
    assert result.returncode == 1, result.stderr
    assert "image 2: unreadable" in json.loads(result.stdout)["problems"][0]
    assert "cache folder nowhere not found" in error_line(c2s(stored, "cache", "ls", "--cache-dir", "nowhere"))


@pytest.mark.parametrize("damage", ["garbage", "no shape"])
def test_damaged_store_manifest_is_one_line(stored, damage):
    store = only_store(stored / "data_cache")
    meta_file = store / "zarr.json"
    meta = json.loads(meta_file.read_text())
    if damage == "garbage":
        meta_file.write_text(meta_file.read_text()[:40])  # cut short, as by a full disk
    else:
        del meta["attributes"]["manifest"]["shape"]
        meta_file.write_text(json.dumps(meta))
    line = error_line(c2s(stored, "train", "--run", "models/x", "--cache", str(store)))
    assert "damaged" in line and "c2s precompute" in line, line
    assert not (stored / "models" / "x").exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    stored, project_params, tmp_path, monkeypatch
):
    """NaN in one term at iteration 3: one line naming it, no step taken, checkpoint.pt still of iteration 2."""
    from c2s_pipeline.stages import train
    from c2s_pipeline.student.loop import NonFiniteLossError
    from c2s_pipeline.student.task import C2STask

    forward, calls = C2STask.forward, []

    def poisoned(self, batch):
        out = forward(self, batch)
        calls.append(1)
        if len(calls) == 3:
            out["nel_loss"] = out["nel_loss"] * float("nan")
            out["loss"] = out["loss"] + out["nel_loss"]
        return out

    monkeypatch.setattr(C2STask, "forward", poisoned)
    params = dataclasses.replace(project_params, train=dataclasses.replace(project_params.train, checkpoint_every=2))
    with pytest.raises(NonFiniteLossError, match=r"not finite at iteration 3 \(nel_loss\); the weights were not "):
        train.run(params, tmp_path / "run", cache_dir=stored / "data_cache")
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["task"].values() if v.is_floating_point())


def test_a_device_this_machine_lacks_is_one_line():
    from c2s_pipeline.runtime import DeviceError, resolve_device

    with pytest.raises(DeviceError, match="unknown device 'gpu0'; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available; use --device cpu"):
            resolve_device("cuda")


def test_a_store_claiming_other_seen_classes_is_refused_by_the_trainer(stored, project_params):
    """The trainer reads seen text rows and regions by the store's own flags: a store whose flags are not the
    dataset's under these params (edited, or from elsewhere) is refused before training starts."""
    path = locate_store(project_params, "train", stored / "data_cache")[0]
    zarr.open_group(store=str(path), mode="r+")["class_seen"][:] = True  # every class "seen"
    line = error_line(c2s(stored, "train", "--run", "models/x"))
    assert "names other classes, or other seen classes" in line and "c2s precompute" in line, line
    assert not (stored / "models" / "x" / "log.jsonl").exists()


def test_evaluate_refuses_a_split_other_than_the_runs(trained, project_params):
    other = dataclasses.replace(
        project_params,
        world=dataclasses.replace(
            project_params.world, unseen=("green circle", "blue square", "yellow triangle", "red star", "green cross")
        ),
    )
    (trained / "params.yaml").write_text(yaml.safe_dump(to_dict(other)))
    line = error_line(c2s(trained, "evaluate", "--run", "models/c2s"))
    assert "was trained with unseen classes" in line and "its config.json" in line, line
    assert not (trained / "metrics").exists()


def test_a_run_folder_in_use_is_refused_and_a_killed_holder_leaves_no_lock(stored, project_params):
    """A second `c2s train` into a folder another one trains into is refused before it touches a file; once the
    holder is killed (-9), the folder trains."""
    run_dir = stored / "models" / "busy"
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text('{"iter": 1}\n')  # the other run's log, kept
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(run_dir / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        line = error_line(c2s(stored, "train", "--run", "models/busy", "--no-resume"))
        assert "is in use by another c2s train" in line, line
        assert (run_dir / "log.jsonl").read_text() == '{"iter": 1}\n'
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert train.run(project_params, run_dir, cache_dir=stored / "data_cache", resume=False) == run_dir
    assert (run_dir / "student.pt").is_file()


def test_content_digest_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path):
    from c2s_pipeline.cache.fingerprint import data_digest

    path = tmp_path / "a.png"
    path.write_bytes(b"0123456789")
    stat = path.stat()
    before = {mode: data_digest([path], mode) for mode in ("stat", "content")}
    path.write_bytes(b"9876543210")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert data_digest([path], "stat") == before["stat"]
    assert data_digest([path], "content") != before["content"]
    assert before["stat"] != before["content"]  # the modes address different stores


def test_cache_verify_finds_a_lost_chunk_by_its_norm(stored):
    """A chunk deleted from a zarr store reads back as zeros: no shape or finiteness check sees it, the norm does."""
    store = only_store(stored / "data_cache")
    (store / "global_cls" / "c" / "1" / "0" / "0").unlink()
    result = c2s(stored, "cache", "verify", str(store))
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["problems"] == ["image 1: global_cls of unit norm failed"]


def test_a_corrupt_chunk_met_in_training_is_one_line(stored):
    store = only_store(stored / "data_cache")
    (store / "local_cls" / "c" / "0" / "0" / "0").write_bytes(b"\xff" * 7)
    line = error_line(c2s(stored, "train", "--run", "models/x"))
    assert "image 0 is unreadable" in line and "c2s cache verify" in line, line


# --- images users bring, and run files from elsewhere ----------------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"


def test_a_postscript_file_named_png_never_reaches_pils_eps_plugin(trained, monkeypatch):
    """PIL's EPS plugin runs Ghostscript; only the formats datasets ship are ever identified."""
    from PIL import EpsImagePlugin

    from c2s_pipeline.data.images import ImageError, decode

    (trained / "x.png").write_bytes(EPS)
    assert Image.open(trained / "x.png").format == "EPS"  # what PIL alone makes of it
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self))
    with pytest.raises(ImageError, match="or not a JPEG/PNG/BMP/WEBP/TIFF file"):
        decode(trained / "x.png")
    assert opened == []
    line = error_line(c2s(trained, "predict", "x.png", "--run", "models/c2s"))
    assert "image x.png is corrupt or truncated, or not a JPEG/PNG" in line, line


def test_an_image_over_the_pixel_cap_is_one_line_naming_the_limit(trained, image, monkeypatch):
    from c2s_pipeline.data import images

    monkeypatch.setenv(images.MAX_PIXELS_ENV, str(64 * 64 - 1))
    with pytest.raises(images.ImageError, match=f"64 x 64 .* over c2s's limit .* {images.MAX_PIXELS_ENV}="):
        images.decode(image)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, str(64 * 64))
    assert images.decode(image).size == (64, 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own bomb check follows a raised cap
    assert images.decode(image).size == (64, 64)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{images.MAX_PIXELS_ENV}='lots' is not a positive whole number"):
        images.decode(image)
    env = {images.MAX_PIXELS_ENV: "1000"}
    result = subprocess.run(
        [sys.executable, "-m", "c2s_pipeline.stages.cli", "predict", str(image), "--run", "models/c2s"],
        cwd=trained,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"{images.MAX_PIXELS_ENV}=<pixels>" in error_line(result)


def test_a_dataset_image_over_the_cap_or_of_another_format_is_a_dataset_error(tmp_path, monkeypatch):
    from c2s_pipeline.data.base import DatasetError
    from c2s_pipeline.data.images import MAX_PIXELS_ENV
    from c2s_pipeline.data.reader import read_image, read_label

    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "b.png").write_bytes(EPS)
    monkeypatch.setenv(MAX_PIXELS_ENV, "199")
    with pytest.raises(DatasetError, match="20 x 10 .* remove its id from the split file"):
        read_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="label .*b.png is corrupt or truncated, or not a JPEG.*; labels are index"):
        read_label(tmp_path / "b.png")


class _Counting:
    """An HTTP server on loopback that counts the requests it gets."""

    def __enter__(self):
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                hits.append(self.path)
                self.send_error(404)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/store.zarr"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def test_a_student_files_recorded_store_is_never_opened(trained):
    """The store is found by fingerprint in --cache-dir (a URL the user passes included), or named with --store,
    whatever student.pt records."""
    path = trained / "models" / "c2s" / STUDENT_FILE
    ckpt = torch.load(path, weights_only=True)
    with _Counting() as web:
        ckpt["config"]["provenance"]["teacher_store"] = web.url
        torch.save(ckpt, path)
        run = RunRecord.from_dict(ckpt["config"])
        url = f"file://{trained / 'data_cache'}"  # a URL the user passes is used
        assert run_store(run, path, cache_dir=url).fingerprint == run.provenance["fingerprint"]
        store = only_store(trained / "data_cache")
        assert Path(run_store(run, path, cache_dir=trained / "data_cache").path) == store
        shutil.move(store, trained / "elsewhere.zarr")
        line = error_line(c2s(trained, "evaluate", "--run", "models/c2s"))
        assert "is not in data_cache" in line and "--store" in line and web.url in line, line
        result = c2s(trained, "evaluate", "--run", "models/c2s", "--store", "elsewhere.zarr", "--out", "n.json")
        assert result.returncode == 0, result.stderr
        assert web.hits == []
    assert json.loads((trained / "n.json").read_text())["sIoU"] >= 0


def test_a_student_file_whose_weights_do_not_fit_is_one_line(trained):
    path = trained / "models" / "c2s" / STUDENT_FILE
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {k: v[..., :1] if v.dim() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)
    line = error_line(c2s(trained, "evaluate", "--run", "models/c2s"))
    assert "its weights do not fit the student its params describe" in line and "retrain" in line, line
