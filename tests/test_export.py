"""ONNX export: onnxruntime gives the torch student's scores (both modes, two sizes, two vocabularies), and
`c2s predict --onnx` draws the overlays `c2s predict --run` draws, without open_clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.utils import parametrize

from c2s_pipeline.eval.deployed import deployed_scores
from c2s_pipeline.eval.inference import predict_logits, segment, slide_stride
from c2s_pipeline.stages import export
from c2s_pipeline.student.checkpoint import load_student
from c2s_pipeline.student.data import image_to_tensor
from c2s_pipeline.student.export import DeployedStudent, export_onnx
from c2s_pipeline.student.model import Student

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("export")]  # trains a tiny student, exports three graphs
REPO = Path(__file__).resolve().parents[1]
SIZES = [(64, 64), (50, 90)]  # the training size, and another aspect ratio that is no multiple of 32


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    root, run_dir = tmp_path_factory.mktemp("export"), trained_run
    student, text, run = load_student(run_dir, cache_dir=run_dir.parent / "cache")
    vocabs = {}
    for n in (len(text), 3):
        vocabs[n] = root / f"vocab{n}.pt"
        torch.save({"class_names": list(run.provenance["class_names"])[:n], "text_embeddings": text[:n]}, vocabs[n])
    graphs = {
        "open": export.run(run_dir, root / "open.onnx", cache_dir=run_dir.parent / "cache"),
        **{
            f"folded{n}": export.run(run_dir, root / f"folded{n}.onnx", vocab=v, cache_dir=run_dir.parent / "cache")
            for n, v in vocabs.items()
        },
    }
    return root, run_dir, graphs, vocabs


def images(h, w, n=2):
    rng = np.random.default_rng(h * w)
    return rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)


def test_onnxruntime_scores_equal_the_torch_students(exported):
    root, run_dir, graphs, _ = exported
    student, text, run = load_student(run_dir, cache_dir=run_dir.parent / "cache")
    scale, size = run.params.student.logit_scale, run.params.data.image_size
    for name, path in graphs.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for h, w in SIZES:
            batch = images(h, w)
            x = batch.transpose(0, 3, 1, 2).astype(np.float32)
            for n in [len(text), 3] if name == "open" else [int(name[6:])]:
                feed = {"image": x} if name != "open" else {"image": x, "text": text[:n].numpy()}
                got = session.run(["scores"], feed)[0]
                with torch.no_grad():
                    want = DeployedStudent(student, scale, size)(torch.from_numpy(x), text[:n]).numpy()
                assert got.shape == (2, n, h, w)
                assert np.abs(got - want).max() < 1e-3, (name, h, w, n)
                # and the class map `c2s predict` computes from the same image
                for b in range(2):
                    pred = segment(
                        lambda t: student.predict_logits(t, text[:n], scale),  # noqa: B023
                        image_to_tensor(batch[b])[None],
                        torch.zeros(n, dtype=torch.bool),
                        0.0,
                        mode="whole",
                        crop=size,
                    ).numpy()
                    assert (got[b].argmax(0) == pred).mean() >= 0.999, (name, h, w, n)


def test_slide_and_flip_run_around_the_graph_as_around_the_torch_student(exported):
    """Every eval mode deploys: the graph's metadata says how `c2s evaluate` ran the student, and
    eval.deployed lays the same windows and flips around the graph."""
    root, run_dir, graphs, _ = exported
    student, text, run = load_student(run_dir, cache_dir=run_dir.parent / "cache")
    scale, size, e = run.params.student.logit_scale, run.params.data.image_size, run.params.eval
    session = ort.InferenceSession(str(graphs["open"]), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["c2s"])
    assert meta["eval"] == {"mode": e.mode, "stride": slide_stride(e.stride, size), "flip": e.flip}

    def run_graph(batch):
        return session.run(["scores"], {"image": batch, "text": text.numpy()})[0]

    stride = slide_stride(0, size)
    for mode, flip in (("slide", False), ("slide", True), ("whole", True)):
        for h, w in [(50, 90), (130, 70)]:  # two and three windows
            image = images(h, w, n=1)[0]
            got = deployed_scores(run_graph, image, {**meta, "eval": {"mode": mode, "stride": stride, "flip": flip}})
            with torch.no_grad():
                want = predict_logits(
                    lambda t: student.predict_logits(t, text, scale).softmax(1),
                    image_to_tensor(image)[None],
                    mode=mode,
                    crop=size,
                    stride=stride,
                    flip=flip,
                )[0].numpy()
            assert got.shape == want.shape == (len(text), h, w)
            assert np.abs(got - want).max() < 1e-3, (mode, flip, h, w)
            assert (got.argmax(0) == want.argmax(0)).mean() >= 0.999, (mode, flip, h, w)


def test_an_isometric_head_exports_as_a_plain_conv_and_scores_as_in_torch(tmp_path):
    """ONNX has no QR: the export fixes the orthonormal weight once, and leaves the student it copied intact."""
    torch.manual_seed(0)
    student, text = Student("linknet", "resnet18", None, embed_dim=64, head="isometric").eval(), torch.randn(4, 64)
    path = export_onnx(DeployedStudent(student, 50.0, 64, text=text), tmp_path / "iso.onnx", list("abcd"), 64)
    x = images(50, 90).transpose(0, 3, 1, 2).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["scores"], {"image": x})[0]
    deployed = DeployedStudent(student, 50.0, 64, text=text)
    with torch.no_grad():
        want = deployed(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 4, 50, 90) and np.abs(got - want).max() < 1e-4
    # the class softmax is written out in the graph (onnxruntime's Softmax on the class axis is slow); linknet
    # has no attention, so no Softmax node is left at all
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Softmax" not in ops and {"ReduceMax", "Exp", "ReduceSum"} <= ops, sorted(ops)
    assert parametrize.is_parametrized(student.net.segmentation_head[0], "weight")  # the original: intact
    fixed = deployed.student.net.segmentation_head[0]
    assert not parametrize.is_parametrized(fixed, "weight")
    assert torch.equal(fixed.weight, student.net.segmentation_head[0].weight.detach())


BLOCK_OPEN_CLIP = (
    "import sys; sys.modules['open_clip'] = None; from c2s_pipeline.stages.cli import app; app(sys.argv[1:])"
)


def c2s_without_open_clip(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_OPEN_CLIP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_predict_onnx_draws_the_overlays_of_predict_run_without_open_clip(exported, project, tmp_path):
    root, run_dir, graphs, vocabs = exported
    Image.fromarray(images(50, 90, 1)[0]).save(tmp_path / "x.png")
    runs = {
        "torch": ["--run", str(run_dir), "--cache-dir", str(run_dir.parent / "cache")],
        "open": ["--onnx", str(graphs["open"])],
        "folded": ["--onnx", str(graphs["folded3"])],
    }
    overlays = {}
    for name, flags in runs.items():
        extra = ["--vocab", str(vocabs[3])] if name != "folded" else []
        result = c2s_without_open_clip(
            project, "predict", str(tmp_path / "x.png"), *flags, *extra, "--out", str(tmp_path / name)
        )
        assert result.returncode == 0, result.stderr
        overlays[name] = np.asarray(Image.open(tmp_path / name / "x_overlay.png"))
    for name in ("open", "folded"):
        assert overlays[name].shape == overlays["torch"].shape
        assert (overlays[name] == overlays["torch"]).all(-1).mean() >= 0.999, name


def test_bad_onnx_file_is_one_line(project, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    Image.fromarray(images(32, 32, 1)[0]).save(tmp_path / "x.png")
    result = c2s_without_open_clip(project, "predict", str(tmp_path / "x.png"), "--onnx", str(tmp_path / "bad.onnx"))
    assert result.returncode == 2 and "is not a c2s ONNX model" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_needs_no_open_clip_and_scores_as_in_process(exported, project, project_params, tmp_path):
    from c2s_pipeline.stages import evaluate

    _, run_dir, _, _ = exported
    result = c2s_without_open_clip(
        project,
        "evaluate",
        "--run",
        str(run_dir),
        "--out",
        str(tmp_path / "cli.json"),
        "--cache-dir",
        str(run_dir.parent / "cache"),
    )
    assert result.returncode == 0, result.stderr
    cli = json.loads((tmp_path / "cli.json").read_text())
    ref_json = evaluate.run(project_params, run_dir, tmp_path / "ref.json", cache_dir=run_dir.parent / "cache")
    ref = json.loads(ref_json.read_text())
    assert [cli[k] for k in ("sIoU", "uIoU", "hIoU")] == [ref[k] for k in ("sIoU", "uIoU", "hIoU")]
    assert cli["sIoU"] > 0


def test_unsure_pixels_are_left_uncoloured_by_predict_and_predict_onnx_alike(exported, project, tmp_path):
    """--unlabelled threshold with a threshold above every pixel's best probability leaves the image as it was,
    in the torch and the ONNX path alike (the parity test above shows both colour pixels otherwise)."""
    root, run_dir, graphs, vocabs = exported
    pixels = images(50, 90, 1)[0]
    Image.fromarray(pixels).save(tmp_path / "x.png")
    for name, flags in {
        "torch": ["--run", str(run_dir), "--cache-dir", str(run_dir.parent / "cache")],
        "onnx": ["--onnx", str(graphs["open"])],
    }.items():
        result = c2s_without_open_clip(
            project,
            "predict",
            str(tmp_path / "x.png"),
            *flags,
            "--vocab",
            str(vocabs[3]),
            "--unlabelled",
            "threshold",
            "--threshold",
            "1.0",
            "--out",
            str(tmp_path / name),
        )
        assert result.returncode == 0, result.stderr
        overlay = np.asarray(Image.open(tmp_path / name / "x_overlay.png").convert("RGB"))[:50, :90]
        assert (overlay == pixels).all(), name  # nothing coloured
