"""Precompute on the tiny world and tiny teacher: store contents, resume after SIGKILL, reuse, formats."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from c2s_pipeline.cache.backends import partial_path
from c2s_pipeline.cache.inspect import list_stores, verify_store
from c2s_pipeline.cache.schema import LATENT, NO_REGION
from c2s_pipeline.cache.store import CacheError, CacheReader, CacheWriter
from c2s_pipeline.stages import precompute
from c2s_pipeline.teacher import registry
from c2s_pipeline.teacher.identity import locate_store, open_store
from c2s_pipeline.teacher.registry import MODEL_CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
ARRAYS = ("global_cls", "dense_tokens", "pseudo_mask", "region_class", "local_cls", "region_count")


def one_at_a_time(params):
    """Batch size 1 so an interrupted and an uninterrupted run see identical CLIP batches."""
    return dataclasses.replace(params, teacher=dataclasses.replace(params.teacher, batch_size=1))


def assert_same_store(a, b):
    ra, rb = CacheReader(a, seen_only=False), CacheReader(b, seen_only=False)
    np.testing.assert_array_equal(ra.text_embeddings(), rb.text_embeddings())
    assert ra.shape == rb.shape
    for i in range(len(ra)):
        x, y = ra.read(i, dense=ra.shape.dense_tokens), rb.read(i, dense=rb.shape.dense_tokens)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=f"{name} of image {i}")


def test_store_contents(tiny_params, tmp_path):
    params = dataclasses.replace(tiny_params, teacher=dataclasses.replace(tiny_params.teacher, dense_tokens="all"))
    path = precompute.run(params, split="train", cache_dir=tmp_path)
    reader = CacheReader(path, seen_only=False)
    s = reader.shape
    assert (s.num_images, s.embed_dim, s.grid, s.mask_size) == (8, 32, (8, 8), 128)
    names = json.loads((Path(tiny_params.data.root) / "world.json").read_text())["class_names"]
    spec_unseen = {names.index(n) for n in tiny_params.world.unseen}
    assert reader.views() == [(0, 0, 128), (0, 0, 96), (0, 32, 96), (32, 0, 96), (32, 32, 96)]
    for i in range(len(reader)):
        rec = reader.read(i, dense=True)
        assert rec.global_cls.dtype == rec.dense_tokens.dtype == rec.local_cls.dtype == np.float16
        assert rec.dense_tokens.shape == (8, 8, 32) and rec.pseudo_mask.shape == (128, 128)
        assert rec.global_cls.shape == (5, 32)
        n = rec.region_count
        assert 1 <= n <= 8 and set(np.unique(rec.pseudo_mask)) <= set(range(n)) | {NO_REGION}
        seen_slots = rec.region_class[:n][rec.region_class[:n] >= 0]
        assert not spec_unseen & set(seen_slots.tolist())  # inductive: no unseen class is labelled
        assert (rec.region_class[:n] >= LATENT).all()
        np.testing.assert_allclose(np.linalg.norm(rec.local_cls[:n].astype(np.float32), axis=1), 1, atol=2e-3)
    assert reader.text_embeddings().shape == (20, 32)


def test_dense_tokens_are_kept_for_evaluation_splits_or_on_request(tiny_params, tmp_path):
    kept = dataclasses.replace(tiny_params, teacher=dataclasses.replace(tiny_params.teacher, dense_tokens="all"))
    train_default = precompute.run(tiny_params, split="train", cache_dir=tmp_path)
    train_all = precompute.run(kept, split="train", cache_dir=tmp_path)
    val_default = precompute.run(tiny_params, split="val", cache_dir=tmp_path)
    assert train_default != train_all  # two stores, two fingerprints
    assert not (train_default / "dense_tokens").exists() and (train_all / "dense_tokens").exists()
    assert (val_default / "dense_tokens").exists()
    lean, full = CacheReader(train_default, seen_only=False), CacheReader(train_all, seen_only=False)
    assert not lean.shape.dense_tokens and full.shape.dense_tokens and CacheReader(val_default).shape.dense_tokens
    for i in range(len(lean)):  # everything training reads is the same
        x, y = lean.read(i), full.read(i, dense=True)
        assert x.dense_tokens is None and y.dense_tokens.shape == (8, 8, 32)
        for name in ARRAYS[:1] + ARRAYS[2:]:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=f"{name} of image {i}")
    with pytest.raises(CacheError, match="teacher.dense_tokens: all"):
        lean.dense_tokens(0)
    assert verify_store(train_default)["problems"] == []
    rows = {Path(r["path"]): r for r in list_stores(tmp_path)}
    assert rows[train_default]["bytes_per_image"] < rows[train_all]["bytes_per_image"] / 2


def test_each_stored_view_is_the_clip_embedding_of_exactly_that_window(tiny_params, tmp_path):
    from c2s_pipeline.data.registry import dataset_from_params
    from c2s_pipeline.data.transforms import resize_pair
    from c2s_pipeline.teacher.clip import load_clip

    path = precompute.run(tiny_params, split="val", cache_dir=tmp_path)
    reader = CacheReader(path, seen_only=False)
    t, size = tiny_params.teacher, tiny_params.data.image_size
    clip = load_clip(t.clip_model, t.pretrained, image_size=size, dense_mode=t.dense_mode)
    image = resize_pair(dataset_from_params(tiny_params, "val")[1].image, np.zeros((128, 128), np.uint8), size)[0]
    stored = reader.read(1).global_cls.astype(np.float32)  # (V, D)
    for v, (top, left, side) in enumerate(reader.views()):
        window = np.ascontiguousarray(image[top : top + side, left : left + side])
        expected = clip.encode_crops(clip.preprocess(window[None], side))[0].numpy()
        np.testing.assert_allclose(stored[v], expected, atol=2e-3, err_msg=f"view {v}")
    assert np.abs(stored[0] - stored[1]).max() > 1e-2  # views differ
    assert reader.manifest["inputs"]["clip_model"] == "c2s-tiny-vit"


def test_an_edited_model_config_addresses_a_new_store_and_the_old_one_is_refused(tiny_params, tmp_path, monkeypatch):
    """The project's own configs can change with the code while their weight names stay the same (a pooling
    change keeps every weight name): the store of the old architecture must not be served for the new one."""
    path = precompute.run(tiny_params, split="val", cache_dir=tmp_path)
    configs = tmp_path / "configs"
    shutil.copytree(MODEL_CONFIG_DIR, configs)
    cfg = json.loads((configs / "c2s-tiny-vit.json").read_text())
    (configs / "c2s-tiny-vit.json").write_text(json.dumps(cfg, indent=4))  # layout only: same store
    monkeypatch.setattr(registry, "MODEL_CONFIG_DIR", configs)
    assert locate_store(tiny_params, "val", tmp_path)[0] == path
    cfg["vision_cfg"]["pool_type"] = "avg"
    (configs / "c2s-tiny-vit.json").write_text(json.dumps(cfg))
    assert locate_store(tiny_params, "val", tmp_path)[0] != path
    with pytest.raises(CacheError, match="other settings: model_config '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        open_store(tiny_params, "val", cache_dir=tmp_path, cache=path)


def test_rerun_reuses_and_teacher_change_makes_a_new_store(tiny_params, tmp_path, caplog):
    path = precompute.run(tiny_params, split="val", cache_dir=tmp_path)
    stamp = path.joinpath("zarr.json").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert precompute.run(tiny_params, split="val", cache_dir=tmp_path) == path
    assert "4/4 images done, 0 to compute" in caplog.text
    changed = dataclasses.replace(tiny_params, mining=dataclasses.replace(tiny_params.mining, merge_threshold=0.5))
    new_path, _ = locate_store(changed, "val", tmp_path)
    assert new_path != path
    student_change = dataclasses.replace(tiny_params, train=dataclasses.replace(tiny_params.train, lr=1.0))
    assert locate_store(student_change, "val", tmp_path)[0] == path
    precompute.run(changed, split="val", cache_dir=tmp_path)
    assert CacheReader(path).manifest["status"] == "complete"  # the old store stays valid
    assert path.joinpath("zarr.json").stat().st_mtime_ns >= stamp


def test_h5_backend_holds_the_same_data(tiny_params, tmp_path):
    p = one_at_a_time(tiny_params)
    zarr_path = precompute.run(p, split="val", cache_dir=tmp_path)
    h5 = dataclasses.replace(p, teacher=dataclasses.replace(p.teacher, store_format="h5"))
    h5_path = precompute.run(h5, split="val", cache_dir=tmp_path)
    assert h5_path.suffix == ".h5"
    assert_same_store(zarr_path, h5_path)


KILLABLE = """
import sys, time, dataclasses, pickle
from c2s_pipeline.cache.store import CacheWriter
from c2s_pipeline.stages import precompute
original = CacheWriter.write_image
def slow(self, i, rec):
    original(self, i, rec)
    print("wrote", i, flush=True)
    time.sleep(0.4)
CacheWriter.write_image = slow
params = pickle.load(open(sys.argv[1], "rb"))
precompute.run(params, split="train", cache_dir=sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_killed_precompute_resumes_to_the_same_store(tiny_params, tmp_path, fmt):
    import pickle

    p = one_at_a_time(tiny_params)
    p = dataclasses.replace(p, teacher=dataclasses.replace(p.teacher, store_format=fmt))
    reference = precompute.run(p, split="train", cache_dir=tmp_path / "ref")
    pickle.dump(p, open(tmp_path / "params.pkl", "wb"))
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "params.pkl"), str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    path, _ = locate_store(p, "train", tmp_path / "killed")
    written = [proc.stdout.readline() for _ in range(2)]  # two images written and flagged done
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(line.startswith("wrote") for line in written), written
    partial = CacheReader(path, require_complete=False)
    done = sum(partial.is_done(i) for i in range(8))
    partial.close()
    assert 2 <= done < 8, f"kill landed at {done} done images"
    if fmt == "h5":  # an unfinished HDF5 store is never at the store's path (backends.H5Backend)
        assert not path.exists() and partial_path(path).exists()
    precompute.run(p, split="train", cache_dir=tmp_path / "killed")
    assert_same_store(reference, path)
    assert not partial_path(path).exists()


def test_a_damaged_h5_partial_is_computed_again_and_a_published_store_is_whole(
    tiny_params, tmp_path, monkeypatch, caplog
):
    """A kill or a full disk mid-write may leave the partial unreadable: the next precompute starts it afresh
    with a warning, and only a complete store is renamed to the store's path."""
    p = one_at_a_time(tiny_params)
    p = dataclasses.replace(p, teacher=dataclasses.replace(p.teacher, store_format="h5"))
    reference = precompute.run(p, split="train", cache_dir=tmp_path / "ref")
    path, _ = locate_store(p, "train", tmp_path / "c")
    original = CacheWriter.write_image

    def dies_at_three(self, i, rec):
        if len(self.done_indices()) == 3:
            raise KeyboardInterrupt
        original(self, i, rec)

    monkeypatch.setattr(CacheWriter, "write_image", dies_at_three)
    with pytest.raises(KeyboardInterrupt):
        precompute.run(p, split="train", cache_dir=tmp_path / "c")
    monkeypatch.undo()
    assert not path.exists()
    rows = list_stores(tmp_path / "c")
    assert [(Path(r["path"]).name, r["status"], r["images_done"]) for r in rows] == [(path.name, "incomplete", 3)]
    damaged = partial_path(path)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with caplog.at_level("WARNING"):
        precompute.run(p, split="train", cache_dir=tmp_path / "c")
    assert "left damaged by a killed run; computing it again" in caplog.text
    assert_same_store(reference, path)
    assert not damaged.exists()
    path.rename(damaged)  # killed after marking it complete, before the rename: the next run renames it
    precompute.run(p, split="train", cache_dir=tmp_path / "c")
    assert path.is_file() and not damaged.exists()
    assert_same_store(reference, path)


def test_train_stages_depend_on_the_one_store_they_read(tiny_params, tmp_path):
    """dvc.yaml: stages reading one store depend on the pointer precompute writes for it, not on data_cache/."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    values = yaml.safe_load((REPO / "params.yaml").read_text())  # what dvc fills ${section.key} from
    path = precompute.run(tiny_params, split="train", cache_dir=tmp_path / "data_cache")
    for name in ("train_c2s", "train_seen_only", "diagnose"):
        deps = [re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(values[m[1]][m[2]]), d) for d in stages[name]["deps"]]
        (pointer,) = [d for d in deps if d.split("/")[0] == "data_cache"]
        assert pointer != "data_cache", name
        assert json.loads((tmp_path / pointer).read_text())["store"] == path.name, name


def test_auto_templates_address_the_store_of_the_datasets_own_prompts(tiny_params, tmp_path):
    with_templates = lambda name: dataclasses.replace(  # noqa: E731
        tiny_params, teacher=dataclasses.replace(tiny_params.teacher, templates=name)
    )
    auto, _ = locate_store(with_templates("auto"), "val", tmp_path)
    assert auto == locate_store(with_templates("single"), "val", tmp_path)[0]  # the world's own set
    assert auto != locate_store(with_templates("ensemble"), "val", tmp_path)[0]
