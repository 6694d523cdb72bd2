"""The teacher store: round trips, done flags, resume, refusals, seen-only access; zarr and h5 alike."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from c2s_pipeline.cache import schema as S
from c2s_pipeline.cache.fingerprint import fingerprint_inputs, teacher_fingerprint
from c2s_pipeline.cache.inspect import list_stores, verify_store
from c2s_pipeline.cache.schema import CacheShape, TeacherRecord
from c2s_pipeline.cache.store import CacheError, CacheReader, CacheWriter, StoreIdentity, UnseenAccessError
from c2s_pipeline.config import MiningConfig
from c2s_pipeline.teacher.registry import model_config_digest

SHAPE = CacheShape(num_images=4, embed_dim=8, grid=(4, 4), mask_size=16, max_regions=5, num_classes=6, num_views=2)
SEEN = np.array([1, 1, 0, 1, 0, 1], bool)
MANIFEST = {"fingerprint": "fp-a", "ids": ["a", "b", "c", "d"], "class_names": list("uvwxyz")}


def unit(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, as the schema stores every CLS, token and text row."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def record(i: int) -> TeacherRecord:
    rng = np.random.default_rng(i)
    mask = rng.integers(0, 3, (16, 16)).astype(np.uint8)
    region_class = np.array([1, S.LATENT, 3, S.EMPTY_SLOT, S.EMPTY_SLOT], np.int16)
    return TeacherRecord(
        unit(rng.normal(size=(2, 8))).astype(np.float16),
        unit(rng.normal(size=(4, 4, 8))).astype(np.float16),
        mask,
        region_class,
        unit(rng.normal(size=(5, 8))).astype(np.float16),
        3,
    )


def path_for(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / ("store.h5" if fmt == "h5" else "store.zarr")


def write_store(path, fmt, indices=range(4), manifest=MANIFEST):
    with CacheWriter.open(path, SHAPE, manifest, fmt=fmt) as w:
        w.write_vocab(unit(np.random.default_rng(9).normal(size=(6, 8))), SEEN)
        for i in indices:
            w.write_image(i, record(i))
        w.finalize()


def tree_digest(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(params=["zarr", "h5"])
def fmt(request):
    return request.param


def test_round_trip_every_array(tmp_path, fmt):
    path = path_for(tmp_path, fmt)
    write_store(path, fmt)
    reader = CacheReader(path, expect=StoreIdentity("fp-a"), seen_only=False)
    assert len(reader) == 4 and reader.ids == MANIFEST["ids"] and reader.shape == SHAPE
    for i in range(4):
        got, want = reader.read(i, dense=True), record(i)
        for name in ("global_cls", "dense_tokens", "pseudo_mask", "region_class", "local_cls"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert got.region_count == 3 and got.global_cls.dtype == np.float16
    assert reader.read(0).dense_tokens is None  # training reads skip the dense tokens
    assert reader.manifest["status"] == "complete"


def test_done_flags_resume_and_incomplete_refusal(tmp_path, fmt):
    path = path_for(tmp_path, fmt)
    write_store(path, fmt, indices=[0, 2])
    with pytest.raises(CacheError, match="incomplete; run `c2s precompute` again"):
        CacheReader(path)
    partial = CacheReader(path, require_complete=False)
    with pytest.raises(CacheError, match="image 1 .* is not done"):
        partial.read(1)
    partial.close()
    with CacheWriter.open(path, SHAPE, MANIFEST, fmt=fmt) as w:  # resume keeps finished images
        assert w.done_indices().tolist() == [0, 2]
        w.write_image(1, record(1))
        w.write_image(3, record(3))
        w.write_image(3, record(3))  # idempotent
        assert w.finalize()["status"] == "complete"
    np.testing.assert_array_equal(CacheReader(path).read(0).local_cls, record(0).local_cls)


def test_mismatched_store_is_refused_and_left_untouched(tmp_path, fmt):
    path = path_for(tmp_path, fmt)
    write_store(path, fmt)
    before = tree_digest(path)
    with pytest.raises(CacheError, match="computed under other settings: fingerprint 'fp-a' -> 'fp-b'"):
        CacheWriter.open(path, SHAPE, {**MANIFEST, "fingerprint": "fp-b"}, fmt=fmt)
    with pytest.raises(CacheError, match="computed under other settings: fingerprint 'fp-a' -> 'fp-b'"):
        CacheReader(path, expect=StoreIdentity("fp-b"))
    assert tree_digest(path) == before


def test_a_schema_2_store_reads_as_one_that_keeps_its_dense_tokens(tmp_path, fmt):
    """Students trained before schema 3 still evaluate: their run names a schema-2 store."""
    from c2s_pipeline.cache.backends import backend_for

    path = path_for(tmp_path, fmt)
    write_store(path, fmt)
    backend = backend_for(fmt).open(path, writable=True)
    manifest = backend.manifest()
    manifest["schema_version"] = 2
    del manifest["shape"]["dense_tokens"]  # schema 2 had no such key
    backend.set_manifest(manifest)
    backend.close()
    reader = CacheReader(path, seen_only=False)
    assert reader.shape.dense_tokens
    np.testing.assert_array_equal(reader.dense_tokens(1), record(1).dense_tokens)


def test_schema_mismatch_and_half_created_store(tmp_path, fmt, monkeypatch):
    path = path_for(tmp_path, fmt)
    write_store(path, fmt)
    import c2s_pipeline.cache.store as store

    monkeypatch.setattr(store, "READABLE_SCHEMAS", (S.SCHEMA_VERSION + 1,))
    with pytest.raises(CacheError, match=f"has schema {S.SCHEMA_VERSION}, this c2s reads {S.SCHEMA_VERSION + 1}"):
        store.CacheReader(path)
    monkeypatch.undo()
    half = tmp_path / ("half.h5" if fmt == "h5" else "half.zarr")
    if fmt == "h5":
        import h5py

        h5py.File(half, "w").close()
    else:
        import zarr

        zarr.create_group(store=str(half), zarr_format=3)
    with pytest.raises(CacheError, match="half-created"):
        CacheReader(half)
    with pytest.raises(CacheError, match="half-created"):
        CacheWriter.open(half, SHAPE, MANIFEST, fmt=fmt, create=False)
    write_store(half, fmt)  # the creating writer makes it again
    assert CacheReader(half).manifest["status"] == "complete"


def test_seen_only_reader_never_exposes_unseen_text(tmp_path, fmt):
    path = path_for(tmp_path, fmt)
    write_store(path, fmt)
    full = CacheReader(path, seen_only=False).text_embeddings()
    reader = CacheReader(path)
    np.testing.assert_array_equal(reader.text_embeddings(), full[SEEN])
    assert reader.class_ids().tolist() == [0, 1, 3, 5]
    with pytest.raises(UnseenAccessError):
        reader.unseen_text_embeddings()


def test_zarr_and_h5_hold_identical_data(tmp_path):
    write_store(tmp_path / "a.zarr", "zarr")
    write_store(tmp_path / "a.h5", "h5")
    z, h = CacheReader(tmp_path / "a.zarr", seen_only=False), CacheReader(tmp_path / "a.h5", seen_only=False)
    np.testing.assert_array_equal(z.text_embeddings(), h.text_embeddings())
    for i in range(4):
        np.testing.assert_array_equal(z.read(i, dense=True).dense_tokens, h.read(i, dense=True).dense_tokens)
        np.testing.assert_array_equal(z.read(i).pseudo_mask, h.read(i).pseudo_mask)


def test_fsspec_url_reads_like_a_path(tmp_path):
    write_store(tmp_path / "u.zarr", "zarr")
    plain, url = CacheReader(tmp_path / "u.zarr"), CacheReader(f"file://{tmp_path}/u.zarr")
    for i in range(4):
        np.testing.assert_array_equal(plain.read(i).local_cls, url.read(i).local_cls)
    np.testing.assert_array_equal(plain.text_embeddings(), url.text_embeddings())


def _write_half(path: str, parity: int) -> None:
    w = CacheWriter.open(path, SHAPE, MANIFEST, fmt="zarr", create=False)
    for i in range(parity, 4, 2):
        w.write_image(i, record(i))


def test_two_processes_write_disjoint_images_into_one_store(tmp_path):
    path = tmp_path / "par.zarr"
    with CacheWriter.open(path, SHAPE, MANIFEST, fmt="zarr") as w:
        w.write_vocab(unit(np.random.default_rng(9).normal(size=(6, 8))), SEEN)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_half, args=(str(path), k)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    write_store(tmp_path / "one.zarr", "zarr")
    par, one = CacheReader(path), CacheReader(tmp_path / "one.zarr")
    for i in range(4):
        np.testing.assert_array_equal(par.read(i).global_cls, one.read(i).global_cls)


def test_list_and_verify(tmp_path):
    write_store(tmp_path / "ok.zarr", "zarr")
    write_store(tmp_path / "part.h5", "h5", indices=[1])
    rows = {Path(r["path"]).name: r for r in list_stores(tmp_path)}
    assert rows["ok.zarr"]["status"] == "complete" and rows["ok.zarr"]["images_done"] == 4
    assert rows["part.h5"]["status"] == "incomplete" and rows["part.h5"]["images_done"] == 1
    assert verify_store(tmp_path / "ok.zarr")["problems"] == []
    import zarr

    zarr.open_group(str(tmp_path / "ok.zarr"), mode="r+")[S.LOCAL_CLS][2, 0, 0] = np.nan
    assert verify_store(tmp_path / "ok.zarr")["problems"] == ["image 2: finite values failed"]


def test_fingerprint_tracks_teacher_settings_only():
    base = dict(
        dataset="world",
        split="train",
        ids=["a", "b"],
        data="d0",
        clip_model="m",
        model_config="c",
        weights_digest="w",
        image_size=128,
        dense_mode="maskclip",
        crop_size=0,
        templates="single",
        mining=MiningConfig(),
        max_regions=16,
        unseen=[1],
        view_crops=(0.75,),
        dense_tokens=True,
    )
    fp = teacher_fingerprint(fingerprint_inputs(**base))
    assert fp == teacher_fingerprint(fingerprint_inputs(**base)) and len(fp) == 16
    changed = {**base, "mining": dataclasses.replace(MiningConfig(), merge_threshold=0.8)}
    assert teacher_fingerprint(fingerprint_inputs(**changed)) != fp
    assert teacher_fingerprint(fingerprint_inputs(**{**base, "ids": ["a", "c"]})) != fp
    assert teacher_fingerprint(fingerprint_inputs(**{**base, "view_crops": (0.5,)})) != fp
    assert teacher_fingerprint(fingerprint_inputs(**{**base, "data": "d1"})) != fp  # images or labels changed
    assert teacher_fingerprint(fingerprint_inputs(**{**base, "dense_tokens": False})) != fp
    assert teacher_fingerprint(fingerprint_inputs(**{**base, "model_config": "c1"})) != fp  # architecture


def test_model_config_digest_reads_the_projects_configs_and_names_open_clips():
    assert model_config_digest("ViT-B-16") is None
    vitb = dict(
        dataset="voc",
        split="val",
        ids=["a"],
        data="d",
        clip_model="ViT-B-16",
        weights_digest="w",
        image_size=512,
        dense_mode="maskclip",
        crop_size=0,
        templates="single",
        mining=MiningConfig(),
        max_regions=16,
        unseen=[1],
        view_crops=(0.75,),
        dense_tokens=True,
    )
    assert "model_config" not in fingerprint_inputs(**vitb, model_config=None)  # its stores keep their address
    world, tiny = model_config_digest("c2s-world-vit"), model_config_digest("c2s-tiny-vit")
    assert len(world) == 16 and world != tiny and world == model_config_digest("c2s-world-vit")
