"""The training loop: AdamW, warm-up + poly, AMP on CUDA, clipping, atomic checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from c2s_pipeline.config import TrainConfig
from c2s_pipeline.data.base import as_in_main_process
from c2s_pipeline.files import exclusive_lock, replacing, write_text
from c2s_pipeline.student.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOCK_FILE,
    LOG_FILE,
    LOSS_CSV,
    STUDENT_FILE,
    CheckpointError,
    RunRecord,
    check_resumable,
    safe_load,
)
from c2s_pipeline.student.task import LOSS_KEYS, C2STask

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite: training stops before the step, the last checkpoint is kept."""


def lr_factor(iteration: int, cfg: TrainConfig, base_lr: float) -> float:
    """Linear warm-up to 1, then poly decay (mmseg default) to min_lr / base_lr."""
    if iteration < cfg.warmup_iters:
        return (iteration + 1) / cfg.warmup_iters
    span = max(1, cfg.iterations - cfg.warmup_iters)
    poly = (1 - min(iteration - cfg.warmup_iters, span) / span) ** cfg.poly_power
    floor = min(cfg.min_lr / base_lr, 1.0)
    return (1 - floor) * poly + floor


NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)


def norm_parameter_ids(module: torch.nn.Module) -> set[int]:
    """ids of the parameters of every normalisation layer (BatchNorm, LayerNorm, GroupNorm, InstanceNorm)."""
    return {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}


def parameter_groups(task: C2STask, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: the encoder at lr, the rest at lr x head_lr_mult; with decay_norms off, the encoder's
    normalisation layers in groups of their own without weight decay. As MMSeg's SegFormer recipe: its `norm`
    decay_mult 0 reaches the backbone's norms only, since the `head` key wins for every decode-head parameter."""
    norms = set() if cfg.decay_norms else norm_parameter_ids(task.student.net.encoder)
    groups = []
    for params, lr in (
        (task.student.encoder_parameters(), cfg.lr),
        (task.head_parameters(), cfg.lr * cfg.head_lr_mult),
    ):
        groups.append({"params": [p for p in params if id(p) not in norms], "lr": lr, "weight_decay": cfg.weight_decay})
        if norms:
            groups.append({"params": [p for p in params if id(p) in norms], "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _schedule(cfg: TrainConfig, base_lr: float) -> Callable[[int], float]:
    """One parameter group's lr factor by iteration (a plain function: LambdaLR's state then saves none)."""
    return lambda it: lr_factor(it, cfg, base_lr)


def build_optimizer(task: C2STask, cfg: TrainConfig):
    groups = parameter_groups(task, cfg)
    # fused: one kernel over all parameters instead of a loop of small ops per tensor (CPU and CUDA).
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [_schedule(cfg, g["lr"]) for g in groups])
    return opt, sched


def _rng_state() -> dict:
    """Every RNG training draws from, as tensors and plain values so checkpoints load with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state())
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill or a full disk never leaves half a checkpoint.

    A failed write (no space, no permission) removes the temporary file and keeps the previous file.
    """
    try:
        with replacing(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as a RuntimeError
        log.debug("cannot write %s", path, exc_info=True)
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise CheckpointError(
            f"cannot write {path} ({reason}); the previous {path.name} is kept: free space or "
            "fix the folder, then run again (training resumes from the last checkpoint)"
        ) from None


def _trim_log(path: Path, last: int) -> None:
    """Keep the rows up to iteration `last`: a killed run logged past its checkpoint, and those are redone."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= last:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a row cut short by the kill
    write_text(path, "".join(keep))


def write_loss_csv(run_dir: Path) -> Path:
    """The run's log.jsonl as loss.csv (one row per logged iteration), which dvc.yaml's loss plot reads."""
    rows = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines() if line.strip()]
    columns = list(rows[0]) if rows else ["iter", *LOSS_KEYS]
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    return write_text(run_dir / LOSS_CSV, "\n".join(lines) + "\n")


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def train(
    task: C2STask,
    loader_factory: Callable[[int], torch.utils.data.DataLoader],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    run: RunRecord,
    device: torch.device,
    resume: bool = True,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> Path:
    """Train `task` for cfg.iterations; returns run_dir (with student.pt, checkpoint.pt, log.jsonl).

    loader_factory(start_iter) gives batches from that iteration on; `wrap` (e.g. DDP) wraps the task.
    `run` (params and provenance) is saved with every checkpoint; a resume must match it. The main process holds
    the run folder's lock throughout, so a second `c2s train` into the same folder is refused before it touches
    a file.
    """
    run_dir = Path(run_dir)
    busy = CheckpointError(
        f"run folder {run_dir} is in use by another c2s train (it holds {LOCK_FILE}); wait for "
        "it to finish, or train into another --run"
    )
    with exclusive_lock(run_dir / LOCK_FILE, busy) if _is_main() else contextlib.nullcontext():
        return _train(task, loader_factory, cfg, run_dir, run=run, device=device, resume=resume, wrap=wrap)


def _train(
    task, loader_factory, cfg: TrainConfig, run_dir: Path, *, run: RunRecord, device: torch.device, resume: bool, wrap
) -> Path:
    saved = run.to_dict()
    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_main():
        for leftover in run_dir.glob("*.tmp"):  # of a write killed mid-way (files.replacing); we hold the lock
            leftover.unlink()
    task.to(device)
    opt, sched = build_optimizer(task, cfg)
    start, ckpt = 0, None
    ckpt_path = run_dir / CHECKPOINT_FILE
    if resume and ckpt_path.is_file():
        # On the CPU: RNG states must stay there, and load_state_dict moves the rest to the model's device.
        ckpt = safe_load(
            ckpt_path,
            "checkpoint",
            "delete it, or pass --no-resume to start this run afresh",
            keys=("task", "optimizer", "scheduler", "rng", "iteration"),
        )
        check_resumable(ckpt_path, ckpt.get("config"), run)
        task.load_state_dict(ckpt["task"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start = ckpt["iteration"]
        if _is_main():
            _trim_log(run_dir / LOG_FILE, start)
        log.info("resumed %s at iteration %d", run_dir, start)
    elif _is_main():
        (run_dir / LOG_FILE).unlink(missing_ok=True)
    # Creating the batch iterator draws from the global RNG: do it before restoring the saved state.
    batches = as_in_main_process(loader_factory(start))
    if ckpt is not None:
        _set_rng_state(ckpt["rng"])
    if _is_main():
        write_text(run_dir / CONFIG_FILE, json.dumps(saved, indent=2))
    model = wrap(task) if wrap else task
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    task.train()
    bar = tqdm(
        range(start, cfg.iterations),
        initial=start,
        total=cfg.iterations,
        desc=run_dir.name,
        unit="it",
        disable=not _is_main(),
    )
    t0 = time.perf_counter()
    for it in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            losses = model(batch)
        if not torch.isfinite(losses["loss"]):  # before the step: no NaN reaches the weights or a checkpoint
            terms = [k for k in LOSS_KEYS[1:] if not torch.isfinite(losses[k])] or ["loss"]
            raise NonFiniteLossError(
                f"the loss is not finite at iteration {it + 1} ({', '.join(terms)}); the weights were not updated "
                f"and {ckpt_path} keeps the last good checkpoint: lower train.lr, or check the data and the "
                "teacher store (c2s cache verify), then run again"
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(task.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        done = it + 1
        if _is_main() and (done % cfg.log_every == 0 or done == cfg.iterations):
            row = {
                "iter": done,
                "lr": opt.param_groups[0]["lr"],
                "time": round(time.perf_counter() - t0, 3),
                **{k: float(losses[k].detach()) for k in LOSS_KEYS},
            }
            with (run_dir / LOG_FILE).open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if _is_main() and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
            atomic_save(
                {
                    "task": task.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": _rng_state(),
                    "iteration": done,
                    "config": saved,
                    "seed": cfg.seed,
                },
                ckpt_path,
            )
    bar.close()
    if _is_main():
        atomic_save(
            {
                "state_dict": task.student.state_dict(),
                "embed_dim": task.student.embed_dim,
                "config": saved,
                "seed": cfg.seed,
                "fingerprint": saved["provenance"].get("fingerprint"),
            },
            run_dir / STUDENT_FILE,
        )
        write_loss_csv(run_dir)
    return run_dir
