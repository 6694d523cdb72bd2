"""The paper files (params-voc / -context / -cocostuff.yaml): self-contained, sourced, one geometry for train and
test, and runnable end to end on a tiny fixture of each dataset's layout (only sizes and counts overridden)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from c2s_pipeline.config import Params, flatten, load_params, override, to_dict
from c2s_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, keep_ratio_size
from c2s_pipeline.eval.inference import slide_size
from c2s_pipeline.student.loop import build_optimizer, norm_parameter_ids
from c2s_pipeline.student.model import Student, class_logits
from c2s_pipeline.student.task import C2STask
from tests.layouts import make_cocostuff, make_context, make_voc

REPO = Path(__file__).resolve().parents[1]
PAPER_FILES = sorted(REPO.glob("params-*.yaml"))
METHOD_SECTIONS = ("data", "teacher", "mining", "student", "loss", "train", "eval")
PLUMBING = {"dataset", "root", "device", "seed", "store_format"}  # keys with no method content to source


def test_there_are_three_paper_files():
    assert [p.name for p in PAPER_FILES] == ["params-cocostuff.yaml", "params-context.yaml", "params-voc.yaml"]


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: p.name)
def test_a_paper_file_states_every_method_key_with_its_source(path):
    """Nothing of a paper file comes from params.yaml (the world's recipe): every key of the method sections is
    written, and each but plumbing carries a comment naming where its value comes from."""
    stated = flatten(yaml.safe_load(path.read_text()))
    defaults = flatten(to_dict(Params()))
    wanted = {k for k in defaults if k.split(".")[0] in METHOD_SECTIONS}
    assert not wanted - stated.keys(), f"{path.name} inherits {sorted(wanted - stated.keys())} from params.yaml"
    section, uncommented = None, []
    for line in path.read_text().splitlines():
        if re.match(r"^\w+:", line):
            section = line.split(":")[0]
        elif m := re.match(r"^  (\w+):", line):
            if (
                section in METHOD_SECTIONS
                and m.group(1) not in PLUMBING
                and "#" not in line
                and not line.rstrip().endswith(":")
            ):
                uncommented.append(f"{section}.{m.group(1)}")
    assert not uncommented, f"{path.name}: no source for {uncommented}"


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: p.name)
def test_a_paper_file_trains_and_tests_on_one_ratio_kept_geometry(path):
    """Training views are ratio-kept crops (the bank) and evaluation slides over the ratio-kept image, at the same
    scale: the bank's image at ratio 1 is the image evaluation slides over."""
    p = load_params(path)
    assert p.teacher.views == "bank" and p.eval.mode == "slide"
    assert p.student.normalisation == "imagenet" and p.student.encoder_weights == "imagenet"
    assert p.train.grad_clip == 0 and not p.train.decay_norms
    size = p.data.image_size
    # (beyond 4:1 slide_size stretches the short side up to one window; no VOC / Context / COCO image is that long)
    for h, w in [(375, 500), (500, 333), (281, 500), (427, 640), (512, 512), (1000, 260)]:
        assert keep_ratio_size(h, w, *p.teacher.view_scale) == slide_size(h, w, size), (h, w)


def _tiny_layout(name: str, root: Path) -> Path:
    quads = [[1, 2, 16, 0], [3, 3, 17, 5], [7, 8, 9, 19]]
    if name == "voc":
        make_voc(root, {"train_aug": quads, "val": quads[:2]})
        return root / "VOCdevkit" / "VOC2012"
    if name == "context":
        make_context(root, quads)
        return root / "VOCdevkit" / "VOC2010"
    for split in ("train2017", "val2017"):
        make_cocostuff(root, quads, split=split)
    return root


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: p.name)
def test_a_paper_file_runs_end_to_end(path, tiny_teacher, tmp_path, monkeypatch):
    """precompute (bank) -> train (a few iterations) -> slide evaluation, with the file's own recipe; overridden:
    the sizes, counts and the two weights this machine cannot download (CLIP's, the encoder's)."""
    from c2s_pipeline.eval import inference
    from c2s_pipeline.stages import evaluate, precompute, train

    p = load_params(path)
    p = override(
        p,
        data={"root": str(_tiny_layout(p.data.dataset, tmp_path / "data")), "image_size": 64},
        teacher={
            "clip_model": "c2s-tiny-vit",
            "pretrained": str(tiny_teacher),
            "batch_size": 2,
            "workers": 0,
            "device": "cpu",
            "view_count": 2,
            "view_scale": [256, 64],
            "max_regions": 8,
        },
        mining={"window_sizes": [2]},
        train={
            "iterations": 2,
            "batch_size": 2,
            "num_workers": 0,
            "warmup_iters": 1,
            "checkpoint_every": 2,
            "log_every": 1,
            "device": "cpu",
        },
        eval={"fps_iters": 1, "fps_warmup": 0, "device": "cpu", "stride": 0},
    )
    p = dataclasses.replace(p, student=dataclasses.replace(p.student, encoder_weights=None))  # override skips None
    cache = tmp_path / "cache"
    for split in (p.data.train_split, p.data.val_split):
        precompute.run(p, split=split, cache_dir=cache)
    run_dir = train.run(p, tmp_path / "run", cache_dir=cache)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(row["loss"]) for row in log)
    windows = []
    monkeypatch.setattr(inference, "_slide", lambda *a, _slide=inference._slide: windows.append(1) or _slide(*a))
    metrics = json.loads(evaluate.run(p, run_dir, tmp_path / "m.json", cache_dir=cache).read_text())
    assert windows and 0 <= metrics["hIoU"] <= 100  # the file's slide evaluation ran


def test_no_weight_decay_on_the_encoders_normalisation_layers(tiny_params):
    """decay_norms off: a step with zero gradients shrinks every weight by lr x wd but the encoder's norm layers'
    (MMSeg SegFormer: `norm` decay_mult 0 on the backbone; its `head` key keeps the decode head's norms decaying).
    Every parameter is in exactly one group, at its own learning rate."""
    student = Student("segformer", "mit_b0", None, embed_dim=32)
    task = C2STask(student, torch.randn(3, 32), tiny_params.loss, 50.0)
    norms = norm_parameter_ids(student.net.encoder)
    assert len(norms) > 40 and norm_parameter_ids(task) - norms  # MiT's LayerNorms; decoder's BN
    encoder = {id(p) for p in student.encoder_parameters()}
    for decay_norms in (False, True):
        cfg = dataclasses.replace(
            tiny_params.train, lr=0.5, head_lr_mult=10.0, weight_decay=0.1, warmup_iters=0, decay_norms=decay_norms
        )
        before = {id(p): p.detach().clone() for p in task.parameters()}
        opt, _ = build_optimizer(task, cfg)
        grouped = [id(p) for g in opt.param_groups for p in g["params"]]
        assert sorted(grouped) == sorted(before) and len(set(grouped)) == len(grouped)
        lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        assert all(lrs[i] == (0.5 if i in encoder else 5.0) for i in lrs)
        for p in task.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for p in task.parameters():
            if before[id(p)].abs().sum() == 0:
                continue
            shrunk = not torch.equal(p.detach(), before[id(p)])
            assert shrunk == (decay_norms or id(p) not in norms)
        with torch.no_grad():
            for p in task.parameters():
                p.copy_(before[id(p)])


def test_imagenet_normalisation_is_timms():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert IMAGENET_MEAN == IMAGENET_DEFAULT_MEAN and IMAGENET_STD == IMAGENET_DEFAULT_STD


def test_imagenet_normalisation_is_the_formula():
    from c2s_pipeline.student.data import image_to_tensor

    image = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    want = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]
    ) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(image_to_tensor(image, "imagenet"), want)
    assert not torch.allclose(image_to_tensor(image, "clip"), want)


def test_a_runs_normalisation_is_used_by_evaluate_predict_and_export(
    trained_run, project_params, tmp_path, monkeypatch
):
    """A run recorded with student.normalisation imagenet is evaluated, predicted and exported with ImageNet's
    mean / std: the run's own params decide, never CLIP's constants."""
    import shutil

    from c2s_pipeline.eval.open_vocab import class_map
    from c2s_pipeline.stages import evaluate, export
    from c2s_pipeline.student import data as student_data
    from c2s_pipeline.student.checkpoint import load_student

    run_dir, cache = tmp_path / "run", trained_run.parent / "cache"
    shutil.copytree(trained_run, run_dir)
    ckpt = torch.load(run_dir / "student.pt", weights_only=True)
    assert ckpt["config"]["params"]["student"]["normalisation"] == "clip"
    ckpt["config"]["params"]["student"]["normalisation"] = "imagenet"
    torch.save(ckpt, run_dir / "student.pt")
    used, normalise = [], student_data.normalise
    monkeypatch.setattr(student_data, "normalise", lambda x, kind="clip": used.append(kind) or normalise(x, kind))
    evaluate.run(project_params, run_dir, tmp_path / "m.json", cache_dir=cache)
    student, text, run = load_student(run_dir, cache_dir=cache)
    class_map(student, text, run.params, project_params.eval, np.zeros((40, 50, 3), np.uint8))
    assert used and set(used) == {"imagenet"}
    built = []
    monkeypatch.setattr(
        "c2s_pipeline.engines.export.export_onnx", lambda model, out, *a, **k: built.append(model) or Path(out)
    )
    export.run(run_dir, tmp_path / "s.onnx", cache_dir=cache)
    torch.testing.assert_close(built[0].mean.flatten(), torch.tensor(IMAGENET_MEAN) * 255)


@pytest.mark.parametrize("head", ["linear", "isometric"])
def test_dot_logits_are_the_papers_and_fold_like_the_cosine(head):
    """seen_logits dot: alpha F^T A with unit text rows and raw features, in training and in the folded path."""
    torch.manual_seed(0)
    student = Student("fpn", "resnet18", None, embed_dim=128, head=head, logits="dot").eval()
    text = torch.randn(5, 128)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = student(x)
        want = 2.0 * torch.einsum("cd,bdhw->bchw", torch.nn.functional.normalize(text, dim=-1), feats)
        torch.testing.assert_close(class_logits(feats, text, 2.0, "dot"), want)
        folded = student.predict_logits(x, text, 2.0)
    up = torch.nn.functional.interpolate(want, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(folded, up, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(class_logits(feats, text, 2.0, "cosine"), want)


def test_dot_seen_logits_in_training(tiny_params):
    """C2STask with a dot student: the seen part of both the plain and the pseudo-mask logits is alpha F^T A_s,
    the latent part beta cos(F, A'_u)."""
    from c2s_pipeline.cache.schema import LATENT
    from c2s_pipeline.student.losses import region_prototypes

    torch.manual_seed(0)
    student = Student("fpn", "resnet18", None, embed_dim=32, logits="dot")
    seen = torch.randn(3, 32)
    task = C2STask(student, seen, tiny_params.loss, 2.0).eval()
    feats = torch.randn(1, 32, 8, 8)
    want = 2.0 * torch.einsum("cd,bdhw->bchw", torch.nn.functional.normalize(seen, dim=-1), feats)
    torch.testing.assert_close(task._seen_logits(feats), want)
    pseudo = torch.zeros(1, 32, 32, dtype=torch.long)
    pseudo[..., 16:] = 1
    batch = {
        "region_class": torch.tensor([[0, LATENT]]),
        "pseudo_mask": pseudo,
        "global_cls": torch.randn(1, 32),
        "local_cls": torch.randn(1, 2, 32),
    }
    protos, present = region_prototypes(feats, pseudo, 2)
    with torch.no_grad():
        logits, target, valid = task._pseudo_logits(feats, batch, protos, present)
    assert logits.shape == (1, 4, 8, 8) and valid.all()
    torch.testing.assert_close(logits[:, :3], want)
    assert logits[:, 3].abs().max() <= tiny_params.loss.beta + 1e-4  # a scaled cosine
