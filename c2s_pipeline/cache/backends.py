"""The two storage backends behind one tiny interface: zarr (default, fsspec URLs) and HDF5 (one file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import zarr

from c2s_pipeline.cache.schema import MANIFEST, PER_IMAGE, CacheShape

H5_SUFFIXES = (".h5", ".hdf5")


def format_of(path: str | Path) -> str:
    return "h5" if str(path).endswith(H5_SUFFIXES) else "zarr"


def is_url(path: str | Path) -> bool:
    return "://" in str(path)


class ZarrBackend:
    """One zarr v3 group; per-image arrays chunked one image per chunk (writers never share a chunk)."""

    def __init__(self, group):
        self.group = group
        self._arrays = {}  # opening an array reads its metadata: ~1 ms, once per name, not per row

    @classmethod
    def exists(cls, path) -> bool:
        if not is_url(path):
            return Path(path).exists()
        try:
            zarr.open_group(str(path), mode="r")
            return True
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            return False

    @classmethod
    def create(cls, path, shape: CacheShape, manifest: dict) -> ZarrBackend:
        group = zarr.create_group(store=str(path), zarr_format=3, overwrite=True)  # over a half-created one
        for name, (dims, dtype, fill) in shape.arrays().items():
            chunks = (1, *dims[1:]) if name in PER_IMAGE else dims
            group.create_array(name, shape=dims, dtype=dtype, chunks=chunks, fill_value=fill)
        group.attrs[MANIFEST] = manifest  # written last: a store without it is half-created
        return cls(group)

    @classmethod
    def open(cls, path, writable: bool) -> ZarrBackend:
        return cls(zarr.open_group(str(path), mode="r+" if writable else "r"))

    def manifest(self) -> dict | None:
        return self.group.attrs.asdict().get(MANIFEST)

    def set_manifest(self, manifest: dict) -> None:
        self.group.attrs[MANIFEST] = manifest

    def array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def flush(self) -> None:
        pass

    def publish(self) -> None:
        pass  # every chunk is its own file: a zarr store needs no final step

    def close(self) -> None:
        pass


def partial_path(path: str | Path) -> Path:
    """Where an HDF5 store lives until every image is done (H5Backend)."""
    return Path(f"{path}.partial")


class H5Backend:
    """One HDF5 file, same arrays and chunking; single writer (HDF5 has no parallel writes here).

    HDF5 updates a file in place, so a kill or a full disk mid-write can leave the whole file unreadable. The
    store is therefore written as `<path>.partial` and renamed to `<path>` by publish() once complete: a file at
    `<path>` was closed whole, and a damaged partial costs only its own images (CacheWriter.open recreates it).
    """

    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path

    @staticmethod
    def located(path) -> Path:
        """The file holding the store: `<path>` once published, else its partial."""
        path = Path(path)
        return path if path.exists() or not partial_path(path).exists() else partial_path(path)

    @classmethod
    def exists(cls, path) -> bool:
        return cls.located(path).exists()

    @classmethod
    def create(cls, path, shape: CacheShape, manifest: dict) -> H5Backend:
        """A fresh `<path>.partial` (over a damaged or half-created one; a file at `<path>` without a manifest,
        which only an older c2s leaves, is removed first)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        with h5py.File(partial_path(path), "w") as f:
            for name, (dims, dtype, fill) in shape.arrays().items():
                chunks = (1, *dims[1:]) if name in PER_IMAGE else None
                f.create_dataset(
                    name,
                    shape=dims,
                    dtype=dtype,
                    chunks=chunks,
                    fillvalue=fill,
                    compression="gzip" if chunks else None,
                    compression_opts=1 if chunks else None,
                )
            f.attrs[MANIFEST] = json.dumps(manifest)
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path, writable: bool) -> H5Backend:
        return cls(h5py.File(cls.located(path), "r+" if writable else "r"), Path(path))

    def is_partial(self) -> bool:
        return Path(self.f.filename) != self.path

    def manifest(self) -> dict | None:
        raw = self.f.attrs.get(MANIFEST)
        return json.loads(raw) if raw is not None else None

    def set_manifest(self, manifest: dict) -> None:
        self.f.attrs[MANIFEST] = json.dumps(manifest)

    def array(self, name: str):
        return self.f[name]

    def flush(self) -> None:
        self.f.flush()

    def publish(self) -> None:
        """Close the complete partial and rename it to the store's path (atomic), then reopen it."""
        if self.is_partial():
            writable = self.f.mode == "r+"
            self.f.close()
            os.replace(partial_path(self.path), self.path)
            self.f = h5py.File(self.path, "r+" if writable else "r")

    def close(self) -> None:
        self.f.close()


BACKENDS = {"zarr": ZarrBackend, "h5": H5Backend}


def backend_for(fmt: str):
    if fmt not in BACKENDS:
        raise KeyError(f"unknown store format '{fmt}'; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[fmt]


def read_row(array, i: int) -> np.ndarray:
    return np.asarray(array[i])
