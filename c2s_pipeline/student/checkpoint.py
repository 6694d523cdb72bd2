"""The run folder's files (student.pt, checkpoint.pt, config.json, log.jsonl), what a checkpoint may be resumed
under, and the student loaded for inference; every torch file is read by student.torch_files.safe_load.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from c2s_pipeline.cache.backends import ZarrBackend, is_url
from c2s_pipeline.cache.store import CacheReader, StoreIdentity, store_path
from c2s_pipeline.config import (
    RENAMED_SECTIONS,
    ConfigError,
    Params,
    changes,
    first_few,
    flatten,
    params_from_dict,
    to_dict,
)
from c2s_pipeline.student.model import Student
from c2s_pipeline.student.torch_files import CheckpointError, safe_load

log = logging.getLogger(__name__)

STUDENT_FILE = "student.pt"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
LOSS_CSV = "loss.csv"  # the log again, for `dvc plots` (which reads no JSON lines)
LOCK_FILE = ".lock"  # held by the process training into the folder (student.loop.train)
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RunRecord:
    """What a run folder says about its student: the params it was trained with, and where it came from
    (provenance: teacher_store, fingerprint, class_names). Saved as {"params": ..., "provenance": ...}."""

    params: Params
    provenance: dict

    def to_dict(self) -> dict:
        return {"params": to_dict(self.params), "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, saved: dict, path: str | Path = "run") -> RunRecord:
        """The typed record; files from before the split (params and provenance in one dict) read too."""
        if not isinstance(saved, dict) or not isinstance(saved.get("params", {}), dict):
            raise CheckpointError(f"{path} has no readable run record (params and provenance); retrain it")
        if "params" not in saved:
            provenance_keys = ("teacher_store", "fingerprint", "class_names")
            saved = {
                "params": {k: v for k, v in saved.items() if k not in provenance_keys},
                "provenance": {k: saved[k] for k in provenance_keys if k in saved},
            }
        params = {
            section: dict(values) if isinstance(values, dict) else values for section, values in saved["params"].items()
        }
        # A record written before the teacher's pretraining section was renamed calls it `pretrain`.
        if "pretrain" in params and RENAMED_SECTIONS["pretrain"] not in params:
            params[RENAMED_SECTIONS["pretrain"]] = params.pop("pretrain")
        # A record may carry loss.alpha, a training-only seen-logit scale equal to student.logit_scale: drop it.
        params.get("loss", {}).pop("alpha", None)
        # A record without loss.ce_reduction trained with one cross-entropy mean over the pseudo mask ("pooled");
        # without the latent term both reductions are the same computation
        # (docs/decisions/0014-grouped-cross-entropy.md).
        loss = params.get("loss")
        if isinstance(loss, dict) and "ce_reduction" not in loss:
            loss["ce_reduction"] = "pooled" if loss.get("use_latent", True) else "grouped"
        try:
            return cls(params_from_dict(params), dict(saved.get("provenance") or {}))
        except ConfigError as err:
            raise CheckpointError(f"{path} holds params this c2s cannot read ({err}); retrain it") from None

    def flat(self) -> dict:
        """{"train.seed": 0, ..., "fingerprint": ...}: the keys resume checks compare."""
        return {**flatten(to_dict(self.params)), **self.provenance}


# Saved-config entries that shape the weights: the store (by fingerprint, wherever it lies) and its classes,
# the encoder weights file (by content), data, student, loss and train. Teacher, mining, eval and world reach
# training only through the store.
RESUME_COMPARED = ("data", "student", "loss", "train", "fingerprint", "class_names", "encoder_weights_sha256")
# Bookkeeping a resumed run may change; train.iterations may only grow (checked on its own).
RESUME_MAY_CHANGE = ("train.log_every", "train.checkpoint_every", "train.iterations")
# Paths compared by the content they name when both records hold its digest: the data by the store's
# fingerprint (ids, sizes and mtimes of the data's files: a copy that kept them), a local encoder weights file
# by its sha256. A moved workspace resumes; a switch between a file and "imagenet" or scratch is refused.
RESUME_BY_CONTENT = {"data.root": "fingerprint", "student.encoder_weights": "encoder_weights_sha256"}


def check_resumable(path: str | Path, saved: dict | None, current: RunRecord) -> None:
    """Refuse to continue a checkpoint under other settings than it was written with; names what differs."""
    old, new = RunRecord.from_dict(saved or {}, path).flat(), current.flat()
    by_content = {k for k, digest in RESUME_BY_CONTENT.items() if old.get(digest) and old[digest] == new.get(digest)}
    keys = sorted(
        k
        for k in old.keys() | new.keys()
        if k.split(".")[0] in RESUME_COMPARED and k not in RESUME_MAY_CHANGE and k not in by_content
    )
    diffs = changes(old, new, keys)
    before, after = old.get("train.iterations"), new.get("train.iterations")
    if before is not None and after is not None and after < before:
        diffs.append(f"train.iterations {before} -> {after} (it may only grow)")
    if diffs:
        raise CheckpointError(
            f"{path} was written under other settings: {first_few(diffs)}; restore "
            "them, or pass --no-resume to start this run afresh"
        )


def load_vocab(path: str | Path) -> tuple[list[str], torch.Tensor]:
    """(class names, (C, D) text embeddings) of a `c2s vocab` file, loaded safely."""
    v = safe_load(
        path,
        "vocabulary",
        f'rebuild it with `c2s vocab "cat,dog,..." -o {path}`',
        keys=("class_names", "text_embeddings"),
    )
    return list(v["class_names"]), v["text_embeddings"].float()


FINGERPRINT = re.compile(r"[0-9a-f]{8,64}")
STORE_SUFFIXES = (".zarr", ".h5")


def run_store(
    run: RunRecord, path: str | Path, *, cache_dir: str | Path, store: str | Path | None = None
) -> CacheReader:
    """The full (all-class) reader of the teacher store a run was trained from: `store` when the user names one,
    else the store of the run's fingerprint in cache_dir. Never the location the run file records: a downloaded
    student.pt must not choose what c2s opens (a URL, a device). Refused unless its fingerprint is the run's."""
    fingerprint = str(run.provenance.get("fingerprint", ""))
    if not FINGERPRINT.fullmatch(fingerprint):
        raise CheckpointError(f"{path} names no valid teacher fingerprint; it is not a c2s run file: retrain it")
    if store is None:
        if is_url(cache_dir):  # a URL the user passed: the store's name there, as precompute names it
            d = run.params.data
            url = store_path(cache_dir, d.dataset, d.train_split, fingerprint, "zarr")
            found = [url] if ZarrBackend.exists(url) else []
        else:
            found = sorted(p for p in Path(cache_dir).glob(f"*-{fingerprint}.*") if p.suffix in STORE_SUFFIXES)
        if not found:
            recorded = run.provenance.get("teacher_store", "?")
            raise CheckpointError(
                f"the teacher store of {path} (fingerprint {fingerprint}) is not in {cache_dir}; "
                f"pass --cache-dir with the folder that holds it, or --store with its path (it was "
                f"trained from {recorded}; c2s opens no location a run file names)"
            )
        store = found[0]
    return CacheReader(store, expect=StoreIdentity(fingerprint), seen_only=False)


def load_student(
    run_dir: str | Path, device: torch.device | str = "cpu", *, cache_dir: str | Path, store: str | Path | None = None
):
    """(student in eval mode, all-class text embeddings of its teacher store (C, D), its RunRecord); the store is
    found as run_store finds it."""
    student, reader, run = load_run(run_dir, device, cache_dir=cache_dir, store=store)
    return student, torch.from_numpy(reader.text_embeddings()).float().to(device), run


def load_run(
    run_dir: str | Path, device: torch.device | str = "cpu", *, cache_dir: str | Path, store: str | Path | None = None
):
    """(student in eval mode, full reader of its teacher store (run_store), its RunRecord)."""
    path = Path(run_dir) / STUDENT_FILE
    ckpt = safe_load(
        path, "student", f"train it with `c2s train --run {run_dir}`", keys=("state_dict", "embed_dim", "config")
    )
    run = RunRecord.from_dict(ckpt["config"], path)
    s = run.params.student
    student = Student(s.arch, s.encoder, None, embed_dim=ckpt["embed_dim"], head=s.head, logits=s.seen_logits)
    try:
        student.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0].strip()[:120]
        raise CheckpointError(
            f"{path}: its weights do not fit the student its params describe ({first}); retrain it"
        ) from None
    student.to(device).eval()
    # Evaluation sees every class: the store is opened with seen_only=False here, never in training.
    return student, run_store(run, path, cache_dir=cache_dir, store=store), run
