"""Test-wide settings: never touch the network, keep CPU threads predictable."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist (`-n 2`, as `make test` runs it) each of the two workers gets one core, and so do the
# CLI subprocesses they start: two torch processes with two threads each would oversubscribe 2 cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from c2s_pipeline.config import Params, to_dict  # noqa: E402


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A generated world small enough for tests: 8 train, 4 val images of 128 px."""
    from c2s_pipeline.config import WorldConfig
    from c2s_pipeline.world.generator import generate_world

    root = tmp_path_factory.mktemp("world")
    generate_world(root, WorldConfig(seed=3, n_train=8, n_val=4, n_caption=16, image_size=128))
    return root


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A random c2s-tiny-vit saved as an ordinary open_clip checkpoint file."""
    import open_clip

    from c2s_pipeline.teacher.registry import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "tiny.pt"
    torch.save(open_clip.create_model("c2s-tiny-vit", pretrained=None).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_params(tiny_world, tiny_teacher) -> Params:
    """Params of the whole pipeline scaled down to the tiny world, teacher and student (frozen, so shared)."""
    p = Params()
    return dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, root=str(tiny_world)),
        # The student the suite was written for: a small Segformer with the fine-tuning recipe.
        student=dataclasses.replace(p.student, arch="segformer", encoder="mit_b0", encoder_weights=None),
        loss=dataclasses.replace(p.loss, focal_weight=100.0),
        teacher=dataclasses.replace(
            p.teacher,
            clip_model="c2s-tiny-vit",
            pretrained=str(tiny_teacher),
            batch_size=4,
            workers=0,
            device="cpu",
            max_regions=8,
        ),
        train=dataclasses.replace(
            p.train,
            iterations=6,
            batch_size=2,
            num_workers=0,
            warmup_iters=2,
            checkpoint_every=3,
            log_every=1,
            device="cpu",
            lr=2e-4,
            head_lr_mult=10.0,
            grad_clip=1.0,
        ),
        eval=dataclasses.replace(p.eval, fps_iters=2, fps_warmup=1, device="cpu"),
    )


@pytest.fixture(scope="session")
def project_params(tiny_params) -> Params:
    """The params `project` writes: the tiny pipeline with 4 training iterations."""
    return dataclasses.replace(tiny_params, train=dataclasses.replace(tiny_params.train, iterations=4))


@pytest.fixture
def project(project_params, tmp_path, monkeypatch):
    """A project folder, made the current directory, with project_params in its params.yaml."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(project_params)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained_run(project_params, tmp_path_factory) -> Path:
    """A tiny student trained with project_params (its store and run folder), for the deployment tests."""
    from c2s_pipeline.stages import precompute, train

    root = tmp_path_factory.mktemp("trained")
    precompute.run(project_params, split="train", cache_dir=root / "cache")
    return train.run(project_params, root / "run", cache_dir=root / "cache")
