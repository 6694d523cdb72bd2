"""Your own data (`data.dataset: folder`): mmseg's custom layout, its classes file, `c2s datasets check`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from c2s_pipeline.config import to_dict
from c2s_pipeline.data.base import DatasetError
from c2s_pipeline.data.folder import FolderDataset, check_folder, folder_spec
from c2s_pipeline.data.world import WorldDataset
from c2s_pipeline.stages.cli import app


def world_as_folder(world: Path, out: Path) -> Path:
    """The tiny world rewritten in the custom layout: its masks are VOC's (0 unlabelled, class k as k + 1), so
    the classes file says reduce_zero_label."""
    names = json.loads((world / "world.json").read_text())["class_names"]
    (out / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (out / "classes.yaml").write_text(yaml.safe_dump({"classes": names, "reduce_zero_label": True}))
    for split in ("train", "val"):
        for folder in ("img_dir", "ann_dir"):
            (out / folder / split).mkdir(parents=True)
        for i in (world / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split():
            shutil.copy(world / "JPEGImages" / f"{i}.jpg", out / "img_dir" / split)
            shutil.copy(world / "SegmentationClass" / f"{i}.png", out / "ann_dir" / split)
    return out


def test_the_world_in_the_custom_layout_reads_as_the_world(tiny_world, tmp_path):
    root = world_as_folder(tiny_world, tmp_path / "mine")
    unseen = ("red circle", "blue square")
    for split in ("train", "val"):
        for seen_only in (False, True):
            mine = FolderDataset(root, split, seen_only=seen_only, unseen=unseen)
            world = WorldDataset(tiny_world, split, seen_only=seen_only, unseen=unseen)
            assert mine.ids == world.ids and mine.spec.unseen == world.spec.unseen
            for i in range(len(mine)):
                a, b = mine[i], world[i]
                assert (a.image == b.image).all() and (a.label == b.label).all()


def write_masks(root: Path, masks: dict[str, np.ndarray], *, palette: bool, classes, **meta) -> Path:
    """A folder of one split (train) with the given masks and grey images of their sizes."""
    for folder in ("img_dir", "ann_dir"):
        (root / folder / "train").mkdir(parents=True, exist_ok=True)
    if isinstance(classes, list):
        (root / "classes.yaml").write_text(yaml.safe_dump({"classes": classes, **meta}))
    else:
        (root / "classes.txt").write_text(classes)
    for name, mask in masks.items():
        Image.fromarray(np.full((*mask.shape, 3), 128, np.uint8)).save(root / "img_dir" / "train" / f"{name}.jpg")
        im = Image.fromarray(mask.astype(np.uint8), mode="L")
        if palette:
            im = im.convert("P")
            im.putpalette([v for k in range(256) for v in (k, 255 - k, k // 2)])
        im.save(root / "ann_dir" / "train" / f"{name}.png")
    return root


@pytest.mark.parametrize("palette", [False, True], ids=["single-channel", "palette"])
@pytest.mark.parametrize("reduce_zero_label", [False, True])
def test_masks_map_to_class_ids_under_either_convention(tmp_path, palette, reduce_zero_label):
    raw = np.array([[0, 1, 2], [3, 255, 1]])
    root = write_masks(
        tmp_path,
        {"a": raw},
        palette=palette,
        classes=["cat", "dog", "sky", "road"],
        reduce_zero_label=reduce_zero_label,
        templates="ensemble",
    )
    dataset = FolderDataset(root, "train", unseen=("dog",))
    expected = np.where(raw == 0, 255, raw - 1) if reduce_zero_label else raw
    if reduce_zero_label:
        expected[raw == 255] = 255
    assert (dataset[0].label == expected).all()
    assert dataset.spec.unseen == (1,) and dataset.spec.templates == "ensemble"
    seen_only = FolderDataset(root, "train", seen_only=True, unseen=("dog",))[0].label
    assert (seen_only == np.where(expected == 1, 255, expected)).all()  # the inductive gate


def test_a_classes_yaml_with_its_own_templates(tiny_params, tiny_teacher, tmp_path):
    """Templates listed in classes.yaml are the prompt set: the teacher embeds each name in each sentence
    (normalised, averaged, normalised), and the store's identity changes with them; a sentence without its {} is
    refused with the file named."""
    import torch
    import torch.nn.functional as F

    from c2s_pipeline.teacher.clip import load_clip
    from c2s_pipeline.teacher.identity import locate_store

    own = ["an aerial photo of {}.", "a drawing of a {} seen from above."]
    roots = {}
    for name, templates in (("own", own), ("single", "single")):
        roots[name] = write_masks(
            tmp_path / name,
            {"a": np.array([[0, 1], [1, 0]])},
            palette=False,
            classes=["roof", "road"],
            templates=templates,
        )
    spec = folder_spec(roots["own"])
    assert spec.templates == tuple(own) and spec.prompt_set("auto") == tuple(own)
    clip = load_clip("c2s-tiny-vit", str(tiny_teacher), image_size=64)
    got = clip.encode_text(["roof", "road"], spec.prompt_set("auto"))
    raw = clip.model.encode_text(clip.tokenizer([t.format(c) for c in ("roof", "road") for t in own]))
    want = F.normalize(F.normalize(raw.float(), dim=-1).view(2, 2, -1).mean(1), dim=-1)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, clip.encode_text(["roof", "road"], "single"), atol=1e-3)

    fingerprints = []
    for root in roots.values():
        p = dataclasses.replace(
            tiny_params, data=dataclasses.replace(tiny_params.data, dataset="folder", root=str(root), unseen=("road",))
        )
        fingerprints.append(locate_store(p, "train", tmp_path / "cache")[1].fingerprint)
    assert fingerprints[0] != fingerprints[1]

    (roots["own"] / "classes.yaml").write_text(
        yaml.safe_dump({"classes": ["roof", "road"], "templates": ["an aerial photo"]})
    )
    with pytest.raises(DatasetError, match=r"classes.yaml: templates must be .* one \{\} each"):
        folder_spec(roots["own"])


def test_a_classes_txt_and_its_refusals(tmp_path):
    root = write_masks(tmp_path / "txt", {"a": np.zeros((2, 2))}, palette=False, classes="cat\n\ndog\n")
    assert folder_spec(root).class_names == ("cat", "dog")
    with pytest.raises(DatasetError, match="data.unseen names bird, not classes of"):
        folder_spec(root, ("bird",))
    with pytest.raises(DatasetError, match="leaves no seen class"):
        folder_spec(root, ("cat", "dog"))
    (root / "classes.txt").write_text("cat\ncat\n")
    with pytest.raises(DatasetError, match="repeated: cat"):
        folder_spec(root)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="no classes file in .*write classes.txt"):
        folder_spec(root)


BROKEN = {
    "image without a mask": "no mask",
    "mask without an image": "no image of this id",
    "unreadable image": "is corrupt or truncated",
    "size mismatch": "4x3, its image is 5x3",
    "value outside the classes": "has value 7 outside 0..2 or 255",
    "missing split folder": "folder not found",
}


def broken_folder(root: Path, case: str) -> Path:
    good = {f"ok{i}": np.array([[0, 1, 2, 1], [1, 1, 2, 255], [0, 0, 0, 0]]) for i in range(2)}
    write_masks(root, good, palette=False, classes=["cat", "dog", "sky"])
    for split in ("img_dir", "ann_dir"):
        (root / split / "val").mkdir()
    shutil.copy(root / "img_dir" / "train" / "ok0.jpg", root / "img_dir" / "val")
    shutil.copy(root / "ann_dir" / "train" / "ok0.png", root / "ann_dir" / "val")
    train_img, train_ann = root / "img_dir" / "train", root / "ann_dir" / "train"
    if case == "image without a mask":
        shutil.copy(train_img / "ok0.jpg", train_img / "lonely.jpg")
    elif case == "mask without an image":
        shutil.copy(train_ann / "ok0.png", train_ann / "lonely.png")
    elif case == "unreadable image":
        (train_img / "ok1.jpg").write_bytes(b"not a jpeg")
    elif case == "size mismatch":
        Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(train_img / "ok1.jpg")
    elif case == "value outside the classes":
        Image.fromarray(np.full((3, 4), 7, np.uint8)).save(train_ann / "ok1.png")
    elif case == "missing split folder":
        shutil.rmtree(root / "ann_dir" / "val")
    return root


def test_a_sound_folder_has_no_problems_and_counts_pixels_per_class(tmp_path):
    report = check_folder(broken_folder(tmp_path, "none"), unseen=("sky",))
    assert report["problems"] == [] and report["unseen"] == ["sky"]
    assert report["splits"]["train"] == {"images": 2, "pixels": {"cat": 10, "dog": 8, "sky": 4}}
    assert report["splits"]["val"]["images"] == 1


@pytest.mark.parametrize("case", list(BROKEN))
def test_datasets_check_names_every_problem_with_its_file(tmp_path, case, monkeypatch):
    root = broken_folder(tmp_path / "data", case)
    problems = check_folder(root)["problems"]
    assert len(problems) == 1 and BROKEN[case] in problems[0], problems
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["datasets", "check", str(root)])
    assert result.exit_code == 1 and f"problem: {problems[0]}" in result.output, result.output
    assert "| cat | seen |" in result.output and "1 problems" in result.output


def test_the_pipeline_trains_and_evaluates_on_a_folder(tiny_params, tiny_world, tmp_path):
    from c2s_pipeline.stages import evaluate, precompute, train

    root = world_as_folder(tiny_world, tmp_path / "mine")
    p = dataclasses.replace(
        tiny_params,
        data=dataclasses.replace(
            tiny_params.data, dataset="folder", root=str(root), unseen=tuple(tiny_params.world.unseen)
        ),
    )
    for split in ("train", "val"):
        precompute.run(p, split=split, cache_dir=tmp_path / "cache")
    run_dir = train.run(p, tmp_path / "run", cache_dir=tmp_path / "cache")
    metrics = json.loads(evaluate.run(p, run_dir, tmp_path / "m.json", cache_dir=tmp_path / "cache").read_text())
    assert all(np.isfinite(metrics[k]) for k in ("sIoU", "uIoU", "hIoU"))
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # dvc metrics show: numbers only


def test_cross_dataset_evaluation_scores_a_run_against_another_vocabulary(
    trained_run, project_params, tiny_world, tmp_path
):
    """The world's val split read as a folder of its own is the world again: scored against its whole vocabulary
    with no seen bias, the run's mIoU over the names it trained on and the rest are evaluate's sIoU and uIoU
    (bias 0). A second run against the same vocabulary needs no CLIP (the embeddings are kept)."""
    from c2s_pipeline.stages import cross, evaluate
    from tests.test_export import c2s_without_open_clip

    cache = trained_run.parent / "cache"
    target = world_as_folder(tiny_world, tmp_path / "target")
    p = dataclasses.replace(project_params, eval=dataclasses.replace(project_params.eval, seen_bias=0.0))
    own = json.loads(evaluate.run(p, trained_run, tmp_path / "own.json", cache_dir=cache).read_text())
    cross = json.loads(
        cross.run(p, trained_run, tmp_path / "cross.json", dataset="folder", root=target, cache_dir=cache).read_text()
    )
    assert cross["classes"] == 20 and cross["trained_names"] == 20 - len(p.world.unseen)
    assert abs(cross["mIoU_trained_names"] - own["sIoU"]) < 0.5 and abs(cross["mIoU_new_names"] - own["uIoU"]) < 0.5
    assert len(list(cache.glob("vocab-*.pt"))) == 1
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "params.yaml").write_text(yaml.safe_dump(to_dict(p)))
    result = c2s_without_open_clip(
        tmp_path / "project",
        "evaluate",
        "--run",
        str(trained_run),
        "--dataset",
        "folder",
        "--root",
        str(target),
        "--cache-dir",
        str(cache),
        "--out",
        str(tmp_path / "again.json"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "again.json").read_text())["mIoU"] == cross["mIoU"]


def test_a_vocab_file_serves_cross_evaluation_and_one_of_other_names_or_prompts_is_refused(
    trained_run, project_params, tiny_world, tmp_path, monkeypatch
):
    """`c2s vocab --dataset` writes what cross-dataset evaluation would embed: with it, the scores are those of the
    kept embeddings and nothing is embedded; a file of other names, or of another prompt set, is one line."""
    from c2s_pipeline.engines import cross
    from c2s_pipeline.engines.evaluate import EvaluationError
    from c2s_pipeline.eval.open_vocab import write_vocab

    cache = trained_run.parent / "cache"
    target = world_as_folder(tiny_world, tmp_path / "target")
    kept = json.loads(
        cross.evaluate_run_on(
            project_params, trained_run, tmp_path / "kept.json", dataset="folder", root=target, cache_dir=cache
        ).read_text()
    )
    vocab = cross.write_target_vocab(project_params, tmp_path / "v.pt", dataset="folder", root=target)
    monkeypatch.setattr(cross, "write_vocab", lambda *a, **k: pytest.fail("embedded again"))
    given = json.loads(
        cross.evaluate_run_on(
            project_params,
            trained_run,
            tmp_path / "given.json",
            dataset="folder",
            root=target,
            cache_dir=cache,
            vocab=vocab,
        ).read_text()
    )
    assert given == kept and given["classes"] == 20
    names = json.loads((tiny_world / "world.json").read_text())["class_names"]
    for bad, message in ((names[:3], "other class names"), (names, "another teacher or prompt set")):
        teacher = dataclasses.replace(project_params.teacher, templates="ensemble")
        write_vocab(dataclasses.replace(project_params, teacher=teacher), bad, tmp_path / "bad.pt")
        with pytest.raises(EvaluationError, match=message):
            cross.evaluate_run_on(
                project_params,
                trained_run,
                tmp_path / "x.json",
                dataset="folder",
                root=target,
                cache_dir=cache,
                vocab=tmp_path / "bad.pt",
            )


def test_the_teachers_dense_map_on_a_vocabulary_scores_as_its_clip_baseline(project_params, tiny_world, tmp_path):
    """The world read as another run's target: the teacher's dense map over its whole vocabulary, its names split
    by params' seen classes, scores what `c2s evaluate --clip-baseline` (the stored tokens, no seen bias) does."""
    from c2s_pipeline.stages import cross, evaluate, precompute

    p = dataclasses.replace(project_params, eval=dataclasses.replace(project_params.eval, seen_bias=0.0))
    precompute.run(p, split="val", cache_dir=tmp_path / "cache")
    own = json.loads(evaluate.run_clip_baseline(p, tmp_path / "own.json", cache_dir=tmp_path / "cache").read_text())
    other = json.loads(
        cross.run_teacher(
            p, tmp_path / "cross.json", dataset="world", root=tiny_world, cache_dir=tmp_path / "cache"
        ).read_text()
    )
    assert other["classes"] == 20 and other["trained_names"] == 20 - len(p.world.unseen)
    assert abs(other["mIoU_trained_names"] - own["sIoU"]) < 1.0 and abs(other["mIoU_new_names"] - own["uIoU"]) < 1.0
    assert len(list((tmp_path / "cache").glob("vocab-*.pt"))) == 1
