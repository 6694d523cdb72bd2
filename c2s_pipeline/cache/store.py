"""Writer and reader of a teacher store; the reader checks schema and fingerprint before anything else."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2s_pipeline.cache import schema as S
from c2s_pipeline.cache.backends import H5Backend, backend_for, format_of, is_url, read_row
from c2s_pipeline.cache.schema import READABLE_SCHEMAS, SCHEMA_VERSION, CacheShape, TeacherRecord
from c2s_pipeline.config import changes, first_few, flatten
from c2s_pipeline.files import exclusive_lock

log = logging.getLogger(__name__)


class CacheError(RuntimeError):
    """A store that cannot be used as asked; one line that says what to run."""


class UnseenAccessError(CacheError):
    """A seen-only reader was asked for unseen-class data (the inductive rule)."""


@dataclass(frozen=True)
class StoreIdentity:
    """What a store must have been computed under: the teacher settings and the files of its split.

    fingerprint: hash of `inputs` (teacher.identity.teacher_inputs, which include a digest of the split's images
    and labels); inputs may be None when not known (then a mismatch cannot say what differs).
    """

    fingerprint: str | None  # None: a manifest that records none (refused by check_identity)
    inputs: dict | None = None


def check_identity(path, manifest: dict, expect: StoreIdentity) -> None:
    """Refuse a store of another schema, other teacher settings or other data, naming what differs."""
    split = manifest.get("split", "?")
    if manifest.get("schema_version") not in READABLE_SCHEMAS:
        readable = " and ".join(map(str, READABLE_SCHEMAS))
        raise CacheError(
            f"store {path} has schema {manifest.get('schema_version')}, this c2s reads {readable}; "
            f"delete it and run `c2s precompute --split {split}` to rebuild it"
        )
    if manifest.get("fingerprint") != expect.fingerprint:
        old, new = flatten(manifest.get("inputs") or {}), flatten(expect.inputs or {})
        diffs = changes(old, new, [k for k in new if k != "data"])
        if "data" in old and not diffs and old["data"] != new.get("data"):
            raise CacheError(
                f"the images or labels of split '{split}' changed since store {path} was computed "
                f"from them (a file's size or modification time differs), so its teacher outputs are "
                f"stale; run `c2s precompute --split {split}` to compute the store of the current files"
            )
        diffs = changes(old, new, list(new)) or changes(manifest, {"fingerprint": expect.fingerprint}, ["fingerprint"])
        raise CacheError(
            f"store {path} was computed under other settings: {first_few(diffs)}; pass the store of "
            f"these settings, or run `c2s precompute` with them"
        )


@contextlib.contextmanager
def store_lock(path):
    """Hold `<store>.lock` while writing a store: a second writer is refused at once instead of interleaving.

    The lock dies with its process (a killed precompute never leaves a stale lock). Not for URLs: object
    stores have no such lock, so concurrent precomputes there are the user's to avoid.
    """
    if is_url(path):
        yield
        return
    lock = Path(f"{path}.lock")
    with exclusive_lock(
        lock,
        CacheError(
            f"store {path} is being written by another c2s precompute (it holds "
            f"{lock.name}); wait for it to finish, then run again"
        ),
    ):
        yield


def is_complete(path, expect: StoreIdentity) -> bool:
    """True when the store exists, every image is done and it was computed under `expect` (else CacheError)."""
    backend_cls = backend_for(format_of(path))
    if not backend_cls.exists(path):
        return False
    try:
        backend = backend_cls.open(path, writable=False)
    except OSError:
        return False  # unreadable: CacheWriter.open says what it is
    manifest = backend.manifest()
    backend.close()
    if manifest is None or manifest.get("status") != "complete":
        return False
    check_identity(path, manifest, expect)
    return True


def publish_complete(path) -> None:
    """Rename an HDF5 partial whose every image is done to the store's path: a run killed between marking it
    complete and renaming it leaves one (backends.H5Backend)."""
    if not _is_partial(path, format_of(path)):
        return
    with store_lock(path):
        if _is_partial(path, "h5"):
            backend = H5Backend.open(path, writable=False)
            try:
                backend.publish()
            finally:
                backend.close()


def store_path(cache_dir, dataset: str, split: str, fingerprint: str, fmt: str = "zarr") -> Path | str:
    suffix = ".h5" if fmt == "h5" else ".zarr"
    name = f"{dataset}-{split}-{fingerprint}{suffix}"
    return f"{str(cache_dir).rstrip('/')}/{name}" if is_url(cache_dir) else Path(cache_dir) / name


def _shape_of(manifest: dict) -> CacheShape:
    s = manifest["shape"]
    return CacheShape(
        s["num_images"],
        s["embed_dim"],
        tuple(s["grid"]),
        s["mask_size"],
        s["max_regions"],
        s["num_classes"],
        s["num_views"],
        s.get("dense_tokens", True),
        s.get("view_boxes", False),
    )


class CacheWriter:
    """Creates or resumes a store; every image is one independent write, its done flag last."""

    def __init__(self, backend, path, shape: CacheShape):
        self.backend, self.path, self.shape = backend, path, shape
        self._done = backend.array(S.DONE)

    @classmethod
    def open(cls, path, shape: CacheShape, manifest: dict, fmt: str | None = None, create: bool = True) -> CacheWriter:
        """Create the store, or reopen it when schema and fingerprint (settings and data digest) match (resume).

        create=False only reopens (non-zero ranks after rank 0 created it behind a barrier). A mismatched
        store is refused and never modified; a half-created one (no manifest) is created again.
        """
        fmt = fmt or format_of(path)
        backend_cls = backend_for(fmt)
        manifest = {
            **manifest,
            "schema_version": SCHEMA_VERSION,
            "format": fmt,
            "status": "incomplete",
            "shape": {
                "num_images": shape.num_images,
                "embed_dim": shape.embed_dim,
                "grid": list(shape.grid),
                "mask_size": shape.mask_size,
                "max_regions": shape.max_regions,
                "num_classes": shape.num_classes,
                "num_views": shape.num_views,
                "dense_tokens": shape.dense_tokens,
                "view_boxes": shape.view_boxes,
            },
            "created": manifest.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        }
        if backend_cls.exists(path):
            try:
                existing = _manifest_of(backend_cls, path)
            except CacheError:
                if not _is_partial(path, fmt) or not create:
                    raise
                # An HDF5 partial damaged by a killed write: only its own images are lost (the caller holds
                # store_lock, so no one else writes it).
                log.warning("store %s was left damaged by a killed run; computing it again", path)
                return cls(backend_cls.create(path, shape, manifest), path, shape)
            if existing is not None:
                check_identity(path, existing, StoreIdentity(manifest["fingerprint"], manifest.get("inputs")))
                return cls(backend_cls.open(path, writable=True), path, shape)
            if not create:
                raise CacheError(f"store {path} is half-created (no manifest); rank 0 recreates it")
            # Only a creation killed before its manifest leaves this (the caller holds store_lock).
            log.warning("store %s was left half-created by a killed run; creating it again", path)
        elif not create:
            raise CacheError(f"store {path} does not exist yet; rank 0 creates it first")
        log.info("creating store %s", path)
        return cls(backend_cls.create(path, shape, manifest), path, shape)

    def is_done(self, i: int) -> bool:
        return bool(self._done[i])

    def done_indices(self) -> np.ndarray:
        return np.nonzero(np.asarray(self._done[:]))[0]

    def write_image(self, i: int, rec: TeacherRecord) -> None:
        """Write every per-image array of image i, then its done flag."""
        arrays = self.shape.arrays()
        values = {
            S.GLOBAL_CLS: rec.global_cls,
            S.VIEW_BOXES: rec.view_boxes,
            S.DENSE_TOKENS: rec.dense_tokens,
            S.PSEUDO_MASK: rec.pseudo_mask,
            S.REGION_CLASS: rec.region_class,
            S.LOCAL_CLS: rec.local_cls,
            S.REGION_COUNT: np.asarray(rec.region_count),
        }
        for name, value in values.items():
            if name not in arrays:
                continue  # dense tokens of a store that does not keep them
            want_shape, dtype, _ = arrays[name]
            value = np.asarray(value)
            if value.shape != want_shape[1:]:
                raise ValueError(f"{name} of image {i}: shape {value.shape}, store expects {want_shape[1:]}")
            self.backend.array(name)[i] = value.astype(dtype)
        self.backend.flush()
        self._done[i] = True
        self.backend.flush()

    def write_vocab(self, text_embeddings: np.ndarray, class_seen: np.ndarray) -> None:
        self.backend.array(S.TEXT_EMBEDDINGS)[:] = np.asarray(text_embeddings, np.float32)
        self.backend.array(S.CLASS_SEEN)[:] = np.asarray(class_seen, bool)
        self.backend.flush()

    def finalize(self) -> dict:
        """Mark the store complete when every image is done; returns the manifest."""
        manifest = self.backend.manifest()
        done = len(self.done_indices())
        manifest.update(
            images_done=int(done),
            status="complete" if done == self.shape.num_images else "incomplete",
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        self.backend.set_manifest(manifest)
        self.backend.flush()
        if manifest["status"] == "complete":
            self.backend.publish()
        return manifest

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


MANIFEST_KEYS = ("fingerprint", "shape", "ids", "class_names")


def _is_partial(path, fmt: str) -> bool:
    return fmt == "h5" and H5Backend.located(path) != Path(path)


def _manifest_of(backend_cls, path) -> dict | None:
    """The store's manifest, None for a half-created store; a damaged one is a CacheError."""
    try:
        backend = backend_cls.open(path, writable=False)
    except OSError as err:
        raise CacheError(
            f"store {path} cannot be opened ({err.__class__.__name__}: {err}); if no other process "
            "holds it, delete it and run `c2s precompute` again"
        ) from None
    except ValueError as err:  # unreadable metadata JSON (zarr), or a file that is no store at all
        raise _damaged(path, err) from None
    try:
        manifest = backend.manifest()
    except ValueError as err:  # unreadable manifest JSON (h5)
        raise _damaged(path, err) from None
    finally:
        backend.close()
    if manifest is not None and not (isinstance(manifest, dict) and all(k in manifest for k in MANIFEST_KEYS)):
        missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
        raise _damaged(path, f"manifest lacks {', '.join(missing)}")
    return manifest


def _damaged(path, reason) -> CacheError:
    return CacheError(
        f"store {path} is damaged ({str(reason).splitlines()[0]}); delete it and run "
        "`c2s precompute` again to compute it afresh"
    )


class CacheReader:
    """Read access for training and evaluation; opens lazily so DataLoader workers each get a handle."""

    def __init__(
        self, path, *, expect: StoreIdentity | None = None, seen_only: bool = True, require_complete: bool = True
    ):
        self.path, self.seen_only = path, seen_only
        self.format = format_of(path)
        if not backend_for(self.format).exists(path):
            raise CacheError(f"teacher store {path} not found; run `c2s precompute` for this dataset/split")
        self._backend, self._pid = None, None
        manifest = _manifest_of(backend_for(self.format), path)
        if manifest is None:
            raise CacheError(f"store {path} is half-created (no manifest); run `c2s precompute` again to create it")
        self.manifest: dict = manifest
        check_identity(path, self.manifest, expect or StoreIdentity(self.manifest.get("fingerprint")))
        self.fingerprint = self.manifest["fingerprint"]
        self.shape = _shape_of(self.manifest)
        self.ids = list(self.manifest.get("ids", []))
        self.class_names = list(self.manifest.get("class_names", []))
        self._seen = np.asarray(self._open().array(S.CLASS_SEEN)[:], bool)
        self._complete = require_complete  # then every row is done: read() need not look at each
        if require_complete and not np.asarray(self._open().array(S.DONE)[:]).all():
            raise CacheError(f"store {path} is incomplete; run `c2s precompute` again to finish it (it resumes)")

    def _open(self):
        if self._backend is None or self._pid != os.getpid():
            self._backend, self._pid = backend_for(self.format).open(self.path, writable=False), os.getpid()
        return self._backend

    def close(self) -> None:
        """Release the file handle (HDF5 refuses a writer while a reader in the process holds it)."""
        if self._backend is not None:
            self._backend.close()
        self._backend, self._pid = None, None

    def __getstate__(self):
        return {**self.__dict__, "_backend": None, "_pid": None}

    def __len__(self) -> int:
        return self.shape.num_images

    def is_done(self, i: int) -> bool:
        return bool(self._open().array(S.DONE)[i])

    def read(self, i: int, dense: bool = False) -> TeacherRecord:
        """One image's teacher outputs; dense tokens only when asked (training never needs them)."""
        if not self._complete and not self.is_done(i):
            raise CacheError(f"image {i} of store {self.path} is not done; run `c2s precompute` to finish it")
        if dense and not self.shape.dense_tokens:
            raise CacheError(
                f"store {self.path} keeps no dense tokens (teacher.dense_tokens: eval stores them for "
                "evaluation splits only); run `c2s precompute` for this split with "
                "teacher.dense_tokens: all"
            )
        b = self._open()
        try:
            return TeacherRecord(
                global_cls=read_row(b.array(S.GLOBAL_CLS), i),
                dense_tokens=read_row(b.array(S.DENSE_TOKENS), i) if dense else None,
                pseudo_mask=read_row(b.array(S.PSEUDO_MASK), i),
                region_class=read_row(b.array(S.REGION_CLASS), i),
                local_cls=read_row(b.array(S.LOCAL_CLS), i),
                region_count=int(read_row(b.array(S.REGION_COUNT), i)),
                view_boxes=read_row(b.array(S.VIEW_BOXES), i) if self.shape.view_boxes else None,
            )
        except Exception as err:  # noqa: BLE001 - a damaged chunk fails in the codec, zarr or h5py
            raise CacheError(
                f"store {self.path}: image {i} is unreadable ({err.__class__.__name__}); run `c2s cache "
                "verify` on it, then delete the store and run `c2s precompute` again"
            ) from None

    def views(self) -> list[tuple[int, int, int]]:
        """The (top, left, side) windows of a corners store's global CLS views, in pseudo-mask pixels (a bank
        store's views are per image: TeacherRecord.view_boxes)."""
        if self.shape.view_boxes:
            raise CacheError(f"store {self.path} holds a view bank: its views are per image (read(i).view_boxes)")
        return [tuple(v) for v in self.manifest["views"]]

    def dense_tokens(self, i: int) -> np.ndarray:
        """(h, w, D) float16 teacher tokens of image i (the CLIP dense baseline)."""
        tokens = self.read(i, dense=True).dense_tokens
        assert tokens is not None  # read(dense=True) refuses a store without them
        return tokens

    def class_seen(self) -> np.ndarray:
        return self._seen.copy()

    def class_ids(self) -> np.ndarray:
        """Class ids of the rows text_embeddings() returns: seen ids, or all on a full reader."""
        return np.nonzero(self._seen)[0] if self.seen_only else np.arange(len(self._seen))

    def text_embeddings(self) -> np.ndarray:
        """(C_s, D) seen rows on a seen-only reader (an unseen row is never read), (C, D) all rows otherwise."""
        array = self._open().array(S.TEXT_EMBEDDINGS)
        if not self.seen_only:
            return np.asarray(array[:], np.float32)
        return np.stack([read_row(array, int(c)) for c in self.class_ids()]).astype(np.float32)

    def unseen_text_embeddings(self) -> np.ndarray:
        if self.seen_only:
            raise UnseenAccessError(
                f"a seen-only reader of {self.path} was asked for unseen text embeddings; training must never read them"
            )
        return np.asarray(self._open().array(S.TEXT_EMBEDDINGS)[:], np.float32)[~self._seen]
