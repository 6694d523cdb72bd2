"""The train stage on the tiny cache: exact resume after SIGKILL, no CLIP, the inductive gate, learning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from c2s_pipeline.cache import store as cache_store
from c2s_pipeline.config import ConfigError, load_params, to_dict
from c2s_pipeline.data import reader as data_reader
from c2s_pipeline.stages import precompute, train
from c2s_pipeline.student.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    STUDENT_FILE,
    CheckpointError,
    RunRecord,
    check_resumable,
    load_student,
)
from c2s_pipeline.student.data import DistillDataset
from c2s_pipeline.student.loop import lr_factor
from c2s_pipeline.student.model import Student
from c2s_pipeline.student.task import C2STask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cached(tiny_params, tmp_path):
    precompute.run(tiny_params, split="train", cache_dir=tmp_path / "cache")
    return tiny_params, tmp_path / "cache"


def run_in_subprocess(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env)


KILLABLE = """
import pickle, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))     # the test's own count: bitwise-equal weights need equal reductions
from c2s_pipeline.student.task import C2STask
forward = C2STask.forward
def slow(self, batch):
    time.sleep(0.3)
    return forward(self, batch)
C2STask.forward = slow
from c2s_pipeline.stages import train
params = pickle.load(open(sys.argv[1], "rb"))
train.run(params, sys.argv[2], cache_dir=sys.argv[3])
"""


@pytest.mark.slow
def test_killed_training_resumes_to_identical_weights(cached, tmp_path):
    params, cache_dir = cached
    train.run(params, tmp_path / "straight", cache_dir=cache_dir)
    pickle.dump(params, open(tmp_path / "p.pkl", "wb"))
    run_dir = tmp_path / "killed"
    proc = run_in_subprocess(
        KILLABLE, str(tmp_path / "p.pkl"), str(run_dir), str(cache_dir), str(torch.get_num_threads())
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run_dir / CHECKPOINT_FILE).exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["iteration"] == 3 and not (run_dir / STUDENT_FILE).exists()
    train.run(params, run_dir, cache_dir=cache_dir)  # resumes at iteration 3
    a = torch.load(tmp_path / "straight" / STUDENT_FILE, weights_only=True)["state_dict"]
    b = torch.load(run_dir / STUDENT_FILE, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (run_dir / LOG_FILE).read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(1, 7))


@pytest.mark.slow
def test_resume_logs_each_iteration_once(cached, tmp_path, monkeypatch):
    """A run that dies after logging past its checkpoint redoes those iterations and logs each once."""
    params, cache_dir = cached
    forward, calls = C2STask.forward, []

    def dies_in_iteration_five(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return forward(self, batch)

    monkeypatch.setattr(C2STask, "forward", dies_in_iteration_five)
    with pytest.raises(RuntimeError, match="killed"):
        train.run(params, tmp_path / "run", cache_dir=cache_dir)  # checkpoint at 3, rows 1..4
    with (tmp_path / "run" / LOG_FILE).open("a") as f:
        f.write('{"iter": 5, "lo')  # and a row cut short by the kill
    monkeypatch.undo()
    train.run(params, tmp_path / "run", cache_dir=cache_dir)
    log = [json.loads(x) for x in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(1, 7))


NO_CLIP = """
import sys, pickle
sys.modules["open_clip"] = None          # any import of open_clip now raises ImportError
from c2s_pipeline.stages import train
params = pickle.load(open(sys.argv[1], "rb"))
train.run(params, sys.argv[2], cache_dir=sys.argv[3])
assert "open_clip" not in [m for m, v in sys.modules.items() if v is not None]
"""


def test_training_never_imports_open_clip(cached, tmp_path):
    params, cache_dir = cached
    pickle.dump(params, open(tmp_path / "p.pkl", "wb"))
    proc = run_in_subprocess(NO_CLIP, str(tmp_path / "p.pkl"), str(tmp_path / "run"), str(cache_dir))
    assert proc.wait(timeout=300) == 0
    assert (tmp_path / "run" / STUDENT_FILE).exists()
    # The run folder records params and provenance apart, and reads back as the params it was trained with.
    saved = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert set(saved) == {"params", "provenance"}
    run = RunRecord.from_dict(saved)
    assert run.params == params
    assert run.provenance["fingerprint"] == cache_store.CacheReader(run.provenance["teacher_store"]).fingerprint
    assert RunRecord.from_dict(torch.load(tmp_path / "run" / STUDENT_FILE, weights_only=True)["config"]) == run


def test_a_run_record_of_the_older_flat_layout_reads_the_same(tiny_params):
    run = RunRecord(tiny_params, {"teacher_store": "s.zarr", "fingerprint": "f", "class_names": ["a"]})
    flat = {**run.to_dict()["params"], **run.provenance}  # how run folders were written before,
    flat["loss"] = {**flat["loss"], "alpha": 50.0}  # with the training-only scale of then
    assert RunRecord.from_dict(flat) == run
    assert RunRecord.from_dict(run.to_dict()) == run


def test_a_run_record_from_before_the_section_rename_reads_and_a_params_file_is_told(tiny_params, tmp_path):
    """Runs trained when the teacher's pretraining section was `pretrain` still load (and resume); a params file
    naming it gets the new name in one line."""
    run = RunRecord(tiny_params, {"fingerprint": "f", "class_names": ["a"]})
    saved = run.to_dict()
    saved["params"]["pretrain"] = saved["params"].pop("teacher_pretrain")
    assert RunRecord.from_dict(saved) == run
    raw = to_dict(tiny_params)
    raw["pretrain"] = raw.pop("teacher_pretrain")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="section pretrain is now called teacher_pretrain: rename it"):
        load_params(tmp_path / "params.yaml")


class _RowGuard:
    """A store array whose unseen rows cannot be read: reading one fails the test."""

    def __init__(self, array, unseen: set[int]):
        self.array, self.unseen = array, unseen

    def __getitem__(self, key):
        first = key[0] if isinstance(key, tuple) else key
        rows = set(range(self.array.shape[0])[first]) if isinstance(first, slice) else {int(first)}
        if rows & self.unseen:
            pytest.fail(f"training read unseen text rows {sorted(rows & self.unseen)}")
        return self.array[key]

    def __getattr__(self, name):
        return getattr(self.array, name)


class _GuardedBackend:
    def __init__(self, backend, unseen):
        self.backend, self.unseen = backend, unseen

    def array(self, name):
        array = self.backend.array(name)
        return _RowGuard(array, self.unseen) if name == "text_embeddings" else array

    def __getattr__(self, name):
        return getattr(self.backend, name)


def test_training_never_reads_an_unseen_text_row(cached, tmp_path, monkeypatch):
    params, cache_dir = cached
    full = cache_store.CacheReader(next(cache_dir.glob("*train*.zarr")), seen_only=False)
    unseen = {int(c) for c in np.flatnonzero(~full.class_seen())}
    assert len(unseen) == 5
    with pytest.raises(pytest.fail.Exception, match="unseen text rows"):  # the guard bites on a full read
        _RowGuard(full._open().array("text_embeddings"), unseen)[:]
    real_open = cache_store.CacheReader._open
    monkeypatch.setattr(
        cache_store.CacheReader,
        "_open",
        lambda self: _GuardedBackend(real_open(self), unseen) if self.seen_only else real_open(self),
    )
    train.run(params, tmp_path / "run", cache_dir=cache_dir)
    assert (tmp_path / "run" / STUDENT_FILE).exists()


def test_training_reads_only_seen_labels_and_seen_text(cached, tmp_path, monkeypatch):
    params, cache_dir = cached
    readers, label_gates, batches = [], [], []
    init = cache_store.CacheReader.__init__

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        readers.append(self.seen_only)

    load_label = data_reader.SegmentationDataset.load_label

    def spy_label(self, i):
        label_gates.append(self.seen_only)
        return load_label(self, i)

    getitem = DistillDataset.__getitem__

    def spy_item(self, key):
        item = getitem(self, key)
        batches.append(item)
        return item

    monkeypatch.setattr(cache_store.CacheReader, "__init__", spy_init)
    monkeypatch.setattr(
        cache_store.CacheReader,
        "unseen_text_embeddings",
        lambda self: pytest.fail("the trainer asked for unseen text embeddings"),
    )
    monkeypatch.setattr(data_reader.SegmentationDataset, "load_label", spy_label)
    monkeypatch.setattr(DistillDataset, "__getitem__", spy_item)
    train.run(params, tmp_path / "run", cache_dir=cache_dir)
    assert readers and all(readers) and label_gates and all(label_gates)
    num_seen = 15
    for item in batches:
        values = set(item["label"].unique().tolist()) | set(item["region_class"].tolist())
        assert all(v < num_seen or v in (255, -1, -2) for v in values)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["task"]["seen_text"].shape == (num_seen, 32)


def test_training_data_must_pass_the_seen_only_gate(cached):
    params, cache_dir = cached
    from c2s_pipeline.data.registry import build_dataset
    from c2s_pipeline.teacher.identity import locate_store

    reader = cache_store.CacheReader(locate_store(params, "train", cache_dir)[0])
    full = build_dataset("world", params.data.root, "train", seen_only=False)
    with pytest.raises(ValueError, match="seen-only gate"):
        DistillDataset(reader, full, 128, params.train)


def test_schedule_warms_up_then_decays_to_min_lr(tiny_params):
    cfg = dataclasses.replace(tiny_params.train, iterations=10, warmup_iters=2, lr=1e-3, min_lr=1e-5)
    factors = [lr_factor(i, cfg, 1e-3) for i in range(11)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and all(a > b for a, b in zip(factors[2:10], factors[3:11]))
    assert factors[10] == pytest.approx(0.01)  # min_lr / lr
    assert factors[6] == pytest.approx(0.99 * 0.5**0.9 + 0.01)


@pytest.mark.slow
def test_160_steps_reduce_every_loss_term(cached, tmp_path):
    params, cache_dir = cached
    tc = dataclasses.replace(
        params.train, iterations=160, batch_size=4, warmup_iters=20, checkpoint_every=160, log_every=1, lr=5e-4
    )
    train.run(dataclasses.replace(params, train=tc), tmp_path / "run", cache_dir=cache_dir)
    rows = [json.loads(x) for x in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    for key in ("global_loss", "local_loss", "nel_loss", "ce_loss", "loss"):
        first = np.mean([r[key] for r in rows[:30]])
        last = np.mean([r[key] for r in rows[-30:]])
        assert last < first, f"{key}: {first:.3f} -> {last:.3f}"


def test_an_isometric_student_trains_and_loads_with_its_head(cached, tmp_path):
    """student.head reaches the saved student: it reloads with the orthonormal head it was trained with."""
    params, cache_dir = cached
    params = dataclasses.replace(
        params,
        student=dataclasses.replace(params.student, arch="linknet", head="isometric", encoder="resnet18"),
        train=dataclasses.replace(params.train, iterations=2),
    )
    run_dir = train.run(params, tmp_path / "run", cache_dir=cache_dir)
    saved = torch.load(run_dir / STUDENT_FILE, weights_only=True)["state_dict"]
    assert "net.segmentation_head.0.parametrizations.weight.original" in saved
    student, _, run = load_student(run_dir, cache_dir=cache_dir)
    weight = student.net.segmentation_head[0].weight[:, :, 0, 0]
    assert run.params.student.head == "isometric" and weight.shape == (32, 32)
    torch.testing.assert_close(weight.T @ weight, torch.eye(32), atol=1e-5, rtol=0)


def test_a_training_item_is_one_stored_view_with_that_views_global_cls(cached):
    from c2s_pipeline.cache.store import CacheReader
    from c2s_pipeline.data.registry import dataset_from_params
    from c2s_pipeline.data.transforms import resize_pair, view_crop_flip
    from c2s_pipeline.student.data import image_to_tensor
    from c2s_pipeline.teacher.identity import locate_store

    params, cache_dir = cached
    reader = CacheReader(locate_store(params, "train", cache_dir)[0], seen_only=True)
    dataset = dataset_from_params(params, "train", seen_only=True)
    distill = DistillDataset(reader, dataset, 128, dataclasses.replace(params.train, flip=False))
    image = resize_pair(dataset[0].image, dataset[0].label, 128)[0]
    views = [
        image_to_tensor(view_crop_flip(image, window=w, size=128, flip=False, rng=None)[0]) for w in reader.views()
    ]
    stored = reader.read(0).global_cls.astype(np.float32)  # (V, D)
    shown = set()
    for step in range(16):
        item = distill[(0, step)]
        match = [v for v, x in enumerate(views) if torch.equal(x, item["image"])]
        assert len(match) == 1, "the student was shown pixels of no stored view"
        np.testing.assert_array_equal(item["global_cls"].numpy(), stored[match[0]])
        shown.add(match[0])
    assert len(shown) > 2  # augmentation picks among them


@pytest.mark.parametrize("saved", [[1, 2], {"params": "x"}, {"params": {"train": {"no_such_key": 1}}}])
def test_an_unreadable_run_record_is_one_checkpoint_error(saved):
    from c2s_pipeline.student.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="retrain it"):
        RunRecord.from_dict(saved, "models/x/student.pt")


def test_training_starts_from_the_encoder_weights_file(cached, tmp_path, monkeypatch):
    """`student.encoder_weights` naming a file (params.yaml's default for the world) is what the trainer's
    student starts from."""
    params, cache_dir = cached
    torch.manual_seed(7)
    source = Student(params.student.arch, params.student.encoder, None, embed_dim=32).net.encoder.state_dict()
    torch.save(source, tmp_path / "encoder.pt")
    started = []
    real_task = C2STask
    monkeypatch.setattr(
        "c2s_pipeline.engines.train.C2STask",
        lambda student, *a, **k: (
            started.append({k: v.clone() for k, v in student.net.encoder.state_dict().items()})
            or real_task(student, *a, **k)
        ),
    )
    weights = str(tmp_path / "encoder.pt")
    params = dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, iterations=1),
        student=dataclasses.replace(params.student, encoder_weights=weights),
    )
    train.run(params, tmp_path / "from_file", cache_dir=cache_dir)
    train.run(
        dataclasses.replace(params, student=dataclasses.replace(params.student, encoder_weights=None)),
        tmp_path / "scratch",
        cache_dir=cache_dir,
    )
    assert all(torch.equal(started[0][k], v) for k, v in source.items())
    first = next(k for k, v in source.items() if v.is_floating_point())
    assert not torch.equal(started[1][first], source[first])
    recorded = [json.loads((tmp_path / r / CONFIG_FILE).read_text())["provenance"] for r in ("from_file", "scratch")]
    assert recorded[0]["encoder_weights_sha256"] == hashlib.sha256((tmp_path / "encoder.pt").read_bytes()).hexdigest()
    assert "encoder_weights_sha256" not in recorded[1]


def test_resume_is_refused_when_the_encoder_weights_file_has_other_contents():
    from c2s_pipeline.config import Params

    def record(sha: str) -> RunRecord:
        return RunRecord(Params(), {"fingerprint": "fp", "class_names": ["a"], "encoder_weights_sha256": sha})

    check_resumable("models/x/checkpoint.pt", record("aa").to_dict(), record("aa"))  # same file: resumes
    with pytest.raises(CheckpointError, match="encoder_weights_sha256 'aa' -> 'bb'.*--no-resume"):
        check_resumable("models/x/checkpoint.pt", record("aa").to_dict(), record("bb"))


def test_runs_from_before_ce_reduction_resume_only_where_the_loss_is_unchanged():
    """A saved record without loss.ce_reduction trained the pooled mean: a C2S run is refused under the grouped
    default, a run without the latent term (the same computation under both) resumes."""
    from c2s_pipeline.config import Params, override

    provenance = {"fingerprint": "fp", "class_names": ["a"]}
    for use_latent, refused in ((True, True), (False, False)):
        current = RunRecord(override(Params(), loss={"use_latent": use_latent}), provenance)
        saved = current.to_dict()
        del saved["params"]["loss"]["ce_reduction"]
        if refused:
            with pytest.raises(CheckpointError, match="loss.ce_reduction 'pooled' -> 'grouped'"):
                check_resumable("models/x/checkpoint.pt", saved, current)
        else:
            check_resumable("models/x/checkpoint.pt", saved, current)


def test_resume_follows_a_moved_workspace_by_content_not_by_path():
    """data.root and a local encoder file may move (same fingerprint, same sha256); other weights may not."""
    from c2s_pipeline.config import Params, override

    def record(root: str, weights: str | None, sha: str | None, fingerprint: str = "fp") -> RunRecord:
        provenance = {"fingerprint": fingerprint, "class_names": ["a"]}
        if sha:
            provenance["encoder_weights_sha256"] = sha
        return RunRecord(override(Params(), data={"root": root}, student={"encoder_weights": weights}), provenance)

    saved = record("/old/world", "/old/encoder.pt", "aa").to_dict()
    check_resumable("models/x/checkpoint.pt", saved, record("/new/world", "/new/encoder.pt", "aa"))
    with pytest.raises(CheckpointError, match="student.encoder_weights '/old/encoder.pt' -> 'imagenet'"):
        check_resumable("models/x/checkpoint.pt", saved, record("/new/world", "imagenet", None))
    with pytest.raises(CheckpointError, match="fingerprint 'fp' -> 'other'"):
        check_resumable("models/x/checkpoint.pt", saved, record("/new/world", "/new/encoder.pt", "aa", "other"))
