"""torch.distributed on CPU (gloo, 2 processes): sharded precompute and DDP training."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from c2s_pipeline.cache.store import CacheReader
from c2s_pipeline.stages import precompute, train
from c2s_pipeline.student.checkpoint import LOG_FILE
from c2s_pipeline.teacher.identity import locate_store
from tests.test_precompute import assert_same_store

pytestmark = pytest.mark.slow  # 2-process gloo runs


def _init(rank: int, world: int, init_file: str, timeout_s: int = 120) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def _precompute_rank(rank, world, init_file, params, cache_dir, die_after):
    _init(rank, world, init_file, timeout_s=20)
    if rank == 1 and die_after:
        from c2s_pipeline.cache.store import CacheWriter

        original, count = CacheWriter.write_image, [0]

        def write_then_die(self, i, rec):
            original(self, i, rec)
            count[0] += 1
            if count[0] == die_after:
                os._exit(9)  # like SIGKILL: no cleanup, no barrier

        CacheWriter.write_image = write_then_die
    precompute.run(params, split="train", cache_dir=cache_dir, rank=rank, world_size=world, barrier=dist.barrier)
    dist.destroy_process_group()


def _train_rank(rank, world, init_file, params, run_dir, cache_dir):
    _init(rank, world, init_file)
    train.run(params, run_dir, cache_dir=cache_dir, rank=rank, world_size=world)
    dist.destroy_process_group()


def one_at_a_time(params):
    return dataclasses.replace(params, teacher=dataclasses.replace(params.teacher, batch_size=1))


def test_two_rank_precompute_equals_one_process(tiny_params, tmp_path):
    params = one_at_a_time(tiny_params)
    reference = precompute.run(params, split="train", cache_dir=tmp_path / "one")
    mp.spawn(_precompute_rank, args=(2, str(tmp_path / "init"), params, str(tmp_path / "two"), 0), nprocs=2)
    sharded, _ = locate_store(params, "train", tmp_path / "two")
    assert CacheReader(sharded).manifest["status"] == "complete"
    assert_same_store(reference, sharded)


def test_killed_rank_then_rerun_completes_the_store(tiny_params, tmp_path):
    params = one_at_a_time(tiny_params)
    reference = precompute.run(params, split="train", cache_dir=tmp_path / "one")
    with pytest.raises(Exception):  # noqa: B017  rank 1 dies, rank 0 times out at the barrier: any error
        mp.spawn(_precompute_rank, args=(2, str(tmp_path / "init"), params, str(tmp_path / "two"), 2), nprocs=2)
    path, _ = locate_store(params, "train", tmp_path / "two")
    partial = CacheReader(path, require_complete=False)
    done = [partial.is_done(i) for i in range(len(partial))]
    assert done[1] and done[3] and not done[5] and not done[7]  # rank 1 wrote 2 of its 4 images
    precompute.run(params, split="train", cache_dir=tmp_path / "two")
    assert_same_store(reference, path)


def test_two_rank_training_follows_the_one_process_loss_trajectory(tiny_params, tmp_path):
    tc = dataclasses.replace(tiny_params.train, iterations=8, batch_size=4, checkpoint_every=8, log_every=1)
    params = dataclasses.replace(tiny_params, train=tc)
    cache_dir = tmp_path / "cache"
    precompute.run(params, split="train", cache_dir=cache_dir)
    train.run(params, tmp_path / "one", cache_dir=cache_dir)
    mp.spawn(_train_rank, args=(2, str(tmp_path / "init"), params, str(tmp_path / "two"), str(cache_dir)), nprocs=2)
    rows = {
        name: [json.loads(x)["loss"] for x in (tmp_path / name / LOG_FILE).read_text().splitlines()]
        for name in ("one", "two")
    }
    assert len(rows["one"]) == len(rows["two"]) == 8
    one, two = np.array(rows["one"]), np.array(rows["two"])
    # rank 0 logs its half of each global batch, so single steps differ; the trajectory must agree
    assert abs(one.mean() - two.mean()) / one.mean() < 0.25
    assert one[-3:].mean() < one[:3].mean() and two[-3:].mean() < two[:3].mean()
