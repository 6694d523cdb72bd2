"""The training dataset: dataset images + seen-only labels + the teacher store, augmented together."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from c2s_pipeline.cache.schema import NO_REGION
from c2s_pipeline.cache.store import CacheError
from c2s_pipeline.config import TrainConfig
from c2s_pipeline.data.base import IGNORE_INDEX
from c2s_pipeline.data.transforms import (
    bank_view,
    normalise,
    pad_to,
    photometric_distortion,
    resize_pair,
    view_crop_flip,
)


def image_to_tensor(image: np.ndarray, normalisation: str = "clip") -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float, normalised as the student's encoder expects (student.normalisation)."""
    return normalise(torch.from_numpy(np.array(image)).permute(2, 0, 1), normalisation)


class DistillDataset(Dataset):
    """Item i: the image, seen-only label and teacher record of image i, one random geometry for all.

    Labels and seen regions are in seen-index space (0..C_s-1), the space of the seen text rows.
    """

    def __init__(self, reader, dataset, image_size: int, cfg: TrainConfig, seed: int = 0, normalisation: str = "clip"):
        if not getattr(dataset, "seen_only", False):
            raise ValueError("training data must pass the seen-only gate: build the dataset with seen_only=True")
        if list(reader.ids) != list(dataset.ids):
            raise ValueError(
                f"teacher store {reader.path} was computed for another image list; "
                "re-run `c2s precompute` for this dataset and split"
            )
        # The store's own seen flags decide which text rows and regions training reads: they must be the
        # dataset's under these params, whatever the store's manifest claims (a store edited or from elsewhere).
        spec = dataset.spec
        if list(reader.class_names) != list(spec.class_names) or not np.array_equal(
            reader.class_seen(), spec.seen_mask()
        ):
            raise CacheError(
                f"teacher store {reader.path} names other classes, or other seen classes, than "
                f"{spec.name} under these params; use the store `c2s precompute` makes for them"
            )
        self.reader, self.dataset, self.size, self.cfg, self.seed = reader, dataset, image_size, cfg, seed
        self.normalisation = normalisation
        self.bank = reader.shape.view_boxes  # per-image boxes, else windows
        self.views = None if self.bank else reader.views()  # (top, left, side) windows
        seen_ids = reader.class_ids()
        lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
        lut[seen_ids] = np.arange(len(seen_ids))
        self.seen_index = lut  # class id -> seen index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        i, step = key if isinstance(key, tuple) else (key, 0)
        sample = self.dataset[i]
        rec = self.reader.read(i)
        rng = np.random.default_rng([self.seed, step, i])
        view = int(rng.integers(len(rec.global_cls)))  # only views whose teacher CLS is stored (DESIGN: Views)
        if self.bank:
            image, label, pseudo = self._bank_item(sample, rec, view, rng)
        else:
            assert self.views is not None  # a corners store's windows
            image, label = resize_pair(sample.image, sample.label, self.size)
            image, label, pseudo = view_crop_flip(
                image, label, rec.pseudo_mask, window=self.views[view], size=self.size, flip=self.cfg.flip, rng=rng
            )
            if self.cfg.photometric:
                image = photometric_distortion(image, rng)
            image = image_to_tensor(image, self.normalisation)
        region_class = rec.region_class.astype(np.int64)
        seen_slot = region_class >= 0
        region_class[seen_slot] = self.seen_index[region_class[seen_slot]]
        if (region_class[seen_slot] == IGNORE_INDEX).any():
            raise ValueError(f"store {self.reader.path} holds an unseen class as a seen region (image {i})")
        return {
            "image": image,  # (3, S, S)
            "label": torch.from_numpy(self.seen_index[label]),  # (S, S) seen index / 255
            "pseudo_mask": torch.from_numpy(pseudo.astype(np.int64)),  # (S, S) slot ids / 255
            "region_class": torch.from_numpy(region_class),  # (R,)
            "local_cls": torch.from_numpy(rec.local_cls.astype(np.float32)),  # (R, D)
            "global_cls": torch.from_numpy(rec.global_cls[view].astype(np.float32)),  # (D,)
            "index": torch.tensor(i),
        }

    def _bank_item(self, sample, rec, view: int, rng: np.random.Generator):
        """The stored view's pixels (MMSeg: resize, crop, flip, distort, normalise, pad): image (3, S, S) float,
        label and pseudo mask (S, S), padding ignored by every loss."""
        image, label, pseudo = bank_view(sample.image, sample.label, rec.pseudo_mask, box=rec.view_boxes[view])
        if self.cfg.flip and rng.random() < 0.5:
            image, label, pseudo = image[:, ::-1], label[:, ::-1], pseudo[:, ::-1]
        if self.cfg.photometric:
            image = photometric_distortion(image, rng)
        h, w = label.shape
        x = image_to_tensor(image, self.normalisation)
        x = torch.nn.functional.pad(x, (0, self.size - w, 0, self.size - h))  # zero after normalising, as MMSeg
        return x, pad_to(label, self.size, IGNORE_INDEX), pad_to(pseudo, self.size, NO_REGION)


class ResumableSampler(torch.utils.data.Sampler):
    """Endless (index, step) keys: epoch e is a permutation seeded by (seed, e), sharded over ranks.

    The key sequence is a pure function of the iteration, so a resumed run sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_iter: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_iter, self.rank, self.world_size = start_iter, rank, world_size

    def keys_for(self, iteration: int) -> list[tuple[int, int]]:
        """The (index, step) keys of this rank's batch at `iteration` (global batch = batch_size * world)."""
        per_epoch = max(1, self.n // (self.batch_size * self.world_size))
        epoch, pos = divmod(iteration, per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        start = (pos * self.world_size + self.rank) * self.batch_size
        return [(int(perm[(start + j) % self.n]), iteration) for j in range(self.batch_size)]

    def __iter__(self):
        iteration = self.start_iter
        while True:
            yield from self.keys_for(iteration)
            iteration += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for progress bars
        return 2**62


def make_loader(
    dataset: DistillDataset, cfg: TrainConfig, start_iter: int = 0, rank: int = 0, world_size: int = 1
) -> DataLoader:
    sampler = ResumableSampler(len(dataset), cfg.batch_size, cfg.seed, start_iter, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=False,
        multiprocessing_context="fork" if cfg.num_workers else None,
    )
