"""The generated world: labels match pixels, determinism, layout; teacher pretraining lowers the loss."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from c2s_pipeline.config import EncoderPretrainConfig, TeacherPretrainConfig, WorldConfig
from c2s_pipeline.data.registry import build_dataset
from c2s_pipeline.student.model import Student
from c2s_pipeline.teacher.registry import register_model_configs
from c2s_pipeline.world.encoder_pretrain import load_caption_photos, photo_batch, pretrain_encoder
from c2s_pipeline.world.generator import CLASS_NAMES, COLOURS, SHAPES, WORLD_B_CLASSES, generate_world, generate_world_b
from c2s_pipeline.world.schedule import warmup_cosine_lr
from c2s_pipeline.world.teacher_pretrain import pretrain_teacher

SMALL = WorldConfig(seed=3, n_train=8, n_val=4, n_caption=16, image_size=128)


def digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "world.json")
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_default_split_is_compositional():
    unseen = WorldConfig().unseen
    assert len(CLASS_NAMES) == 20 and len(unseen) == 5 and set(unseen) <= set(CLASS_NAMES)
    seen = [n for n in CLASS_NAMES if n not in unseen]
    for name in unseen:
        colour, shape = name.split()
        assert any(n.startswith(colour + " ") for n in seen) and any(n.endswith(" " + shape) for n in seen)


def test_layout_and_labels_match_pixels(tiny_world):
    meta = json.loads((tiny_world / "world.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) and "unseen" not in meta  # the split is a parameter
    ds = build_dataset("world", tiny_world, "train")
    assert len(ds) == 8 and len(build_dataset("world", tiny_world, "val")) == 4
    colours = np.array(list(COLOURS.values()), float)
    checked = 0
    for i in range(len(ds)):
        sample = ds[i]
        for cls in np.unique(sample.label[sample.label != 255]):
            inside = sample.label == cls
            # erode: keep pixels whose 4-neighbours share the label (JPEG bleeds at edges)
            core = inside.copy()
            core[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
            if core.sum() < 20:
                continue
            mean = sample.image[core].mean(0)
            nearest = int(np.argmin(((colours - mean) ** 2).sum(1)))
            assert nearest == cls % len(COLOURS), f"class {CLASS_NAMES[cls]} looks {list(COLOURS)[nearest]}"
            checked += 1
        assert (sample.label == 255).any()  # background is ignore
    assert checked >= 8


def test_world_b_is_half_the_vocabulary_with_more_smaller_objects_on_another_ground(tiny_world, tmp_path):
    """World B (the cross-dataset target): the red and blue classes only, labelled in its own class order, each
    object's colour its class's; more and smaller objects than world A's; val only; deterministic."""
    cfg = WorldConfig(seed=0, n_val=12, image_size=128)
    meta = generate_world_b(tmp_path / "b", cfg)
    names = [CLASS_NAMES[c] for c in WORLD_B_CLASSES]
    assert meta["class_names"] == names and len(names) == 10 and {n.split()[0] for n in names} == {"red", "blue"}
    assert not (tmp_path / "b" / "ImageSets" / "Segmentation" / "train.txt").exists()
    b, a = build_dataset("world", tmp_path / "b", "val", world_unseen=()), build_dataset("world", tiny_world, "val")
    colours = np.array(list(COLOURS.values()), float)
    per_image, sizes = {"a": [], "b": []}, {"a": [], "b": []}
    for key, ds in (("a", a), ("b", b)):
        for i in range(len(ds)):
            label = ds[i].label
            present = np.unique(label[label != 255])
            per_image[key].append(len(present))
            sizes[key] += [(label == c).mean() for c in present]
            if key == "b":
                for c in present:
                    mean = ds[i].image[label == c].mean(0)
                    colour = list(COLOURS)[int(np.argmin(((colours - mean) ** 2).sum(1)))]
                    assert names[c].startswith(colour), f"{names[c]} drawn {colour}"
    assert np.mean(per_image["b"]) > np.mean(per_image["a"]) and max(per_image["b"]) <= 6
    assert np.median(sizes["b"]) < np.median(sizes["a"])
    generate_world_b(tmp_path / "again", cfg)
    assert digest(tmp_path / "b") == digest(tmp_path / "again")


def test_captions_name_every_drawn_object(tiny_world):
    rows = [json.loads(x) for x in (tiny_world / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    for row in rows:
        assert all(CLASS_NAMES[c] in row["caption"] for c in row["classes"])
        assert Image.open(tiny_world / row["image"]).size == (128, 128)
    unseen = {CLASS_NAMES.index(n) for n in WorldConfig().unseen}
    assert any(c in unseen for row in rows for c in row["classes"])  # the teacher sees unseen names


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    generate_world(tmp_path / "a", SMALL)
    generate_world(tmp_path / "b", SMALL)
    generate_world(tmp_path / "c", WorldConfig(seed=4, n_train=8, n_val=4, n_caption=16, image_size=128))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_pretraining_lowers_the_loss_and_writes_an_open_clip_checkpoint(tiny_world, tmp_path):
    cfg = TeacherPretrainConfig(epochs=6, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=1, seed=0)
    out = tmp_path / "clip.pt"
    metrics = pretrain_teacher(tiny_world, out, cfg, model_name="c2s-tiny-vit")
    assert metrics["loss_after"] < metrics["loss_before"]
    assert set(metrics) >= {"zero_shot_top1_seen", "zero_shot_top1_unseen"}
    assert metrics["model_config"] == open_clip.get_model_config("c2s-tiny-vit")  # checked when it loads
    model = open_clip.create_model("c2s-tiny-vit", pretrained=str(out)).eval()
    state = torch.load(out, weights_only=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert 0 < json.loads(out.with_suffix(".json").read_text())["steps"] <= 12  # 6 epochs x <= 2 batches


def test_pretraining_optimizer_takes_the_same_steps_as_torchs_default_adamw():
    from c2s_pipeline.world.teacher_pretrain import make_optimizer

    cfg = TeacherPretrainConfig(lr=1e-2, weight_decay=0.1)
    states = []
    for build in (
        lambda m: make_optimizer(m, cfg),
        lambda m: torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
    ):
        register_model_configs()
        torch.manual_seed(0)
        model = open_clip.create_model("c2s-tiny-vit", pretrained=None, output_dict=True)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        opt, gen = build(model), torch.Generator().manual_seed(1)
        tokens = open_clip.get_tokenizer("c2s-tiny-vit")(["a photo of a red circle", "a photo of a blue star"])
        for _ in range(3):
            out = model(torch.randn(2, 3, 64, 64, generator=gen), tokens)
            loss = open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        states.append(model.state_dict())
    assert not torch.equal(states[0]["visual.proj"], start["visual.proj"])  # the steps moved it
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[1])  # bit for bit: same teacher


def test_caption_batches_never_repeat_a_caption_and_drop_only_leftovers():
    from c2s_pipeline.world.teacher_pretrain import distinct_caption_batches

    captions = ["a"] * 6 + ["b"] * 3 + [f"c{i}" for i in range(7)]
    batches = distinct_caption_batches(captions, 4, torch.Generator().manual_seed(0))
    assert batches and all(len(b) == 4 for b in batches)
    for b in batches:
        assert len({captions[i] for i in b.tolist()}) == 4
    used = [i for b in batches for i in b.tolist()]
    assert len(used) == len(set(used))  # each item at most once
    assert sum(captions[i] == "a" for i in used) <= len(batches)  # one "a" per batch at most


def test_world_pretraining_lr_warms_up_linearly_then_follows_a_half_cosine_to_zero():
    lr = [warmup_cosine_lr(step, 110, 1.0, warmup=10) for step in range(111)]
    assert lr[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up to the base rate
    assert lr[10] == pytest.approx(1.0) and lr[60] == pytest.approx(0.5) and lr[110] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(lr[10:], lr[11:]))  # then only decays
    # No warm-up (the student encoder's): a half cosine over the whole run, step for step.
    assert [warmup_cosine_lr(s, 600, 1e-3) for s in range(600)] == pytest.approx(
        [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 600)) for s in range(600)], rel=1e-12
    )


def test_unknown_shape_is_a_clear_error():
    from c2s_pipeline.world.generator import shape_polygon

    with pytest.raises(KeyError, match="choose one of " + ", ".join(SHAPES)):
        shape_polygon("hexagon", 0, 0, 1, 0)


def test_object_crops_are_square_boxes_and_measure_what_else_they_show():
    from c2s_pipeline.world.diagnose import object_crops

    image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    label = np.full((20, 20), 255, dtype=np.uint8)
    label[2:8, 2:7] = 4  # a 6 x 5 box: the crop is the 6 x 6 square centred on it
    label[2:8, 1] = 9  # another object inside that square: 6 of its 36 pixels
    label[12:18, 12:18] = 9
    crops = {c: (crop, other) for crop, c, other in object_crops(image, label)}
    crop, other = crops[4]
    assert crop.shape == (6, 6, 3) and np.array_equal(crop, image[2:8, 1:7])
    assert other == pytest.approx(6 / 36)
    crop, other = crops[9]  # rows 2-17, columns 1-17: a 17 x 17 square holding object 4 too
    assert np.array_equal(crop, image[1:18, 1:18]) and other == pytest.approx(30 / 289)


def test_scene_top1_scores_the_image_level_answer_against_the_classes_present():
    from c2s_pipeline.world.diagnose import scene_top1

    def label(*classes):
        out = np.full((4, 4), 255, dtype=np.uint8)
        for k, c in enumerate(classes):
            out[k] = c
        return out

    labels = [label(1), label(1), label(7), label(1, 7), label(2, 3, 7), label()]  # the last has no object
    predicted = [1, 2, 7, 7, 5, 0]
    out = scene_top1(predicted, labels, unseen=[7])
    assert out["present"] == pytest.approx(100 * 3 / 5)  # 1, 7, 7 hit; 2 and 5 are absent classes
    assert out["by_objects"] == {1: pytest.approx(200 / 3), 2: 100.0, 3: 0.0}
    single = out["single_object"]
    assert single["seen_top1"] == 50.0 and single["unseen_top1"] == 100.0 and single["crops"] == 3


@pytest.mark.parametrize("pattern", ["striped", "checked"])
def test_a_pattern_repeats_at_its_period(pattern):
    from c2s_pipeline.world.generator import surface

    for period in (8.0, 16.0):
        shade = surface(pattern, np.random.default_rng(0), 128, period)
        power = np.abs(np.fft.fft2(shade - shade.mean())) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij")
        strongest = 1 / np.hypot(fy, fx).flat[power.argmax()]  # px per cycle
        # the checks' strongest components run along the diagonals of their squares: period / sqrt(2)
        expected = period / np.sqrt(2) if pattern == "checked" else period
        assert strongest == pytest.approx(expected, rel=0.1), (pattern, period, strongest)


def test_pattern_scales_with_its_object(monkeypatch):
    from c2s_pipeline.world import generator

    periods = []
    real_surface = generator.surface
    monkeypatch.setattr(
        generator, "surface", lambda p, rng, size, period: periods.append(period) or real_surface(p, rng, size, period)
    )
    for radius in (0.1, 0.3):
        generator.render(np.random.default_rng(0), 128, [CLASS_NAMES.index("red triangle")], radius=(radius, radius))
    assert periods == pytest.approx([generator.PATTERN_PERIOD * 0.1 * 128, generator.PATTERN_PERIOD * 0.3 * 128])


def test_pretraining_crops_zoom_in_and_full_side_keeps_every_pixel(monkeypatch):
    from c2s_pipeline.world import teacher_pretrain as pretrain

    yy, xx = np.mgrid[0:64, 0:64]
    board = torch.from_numpy(((yy // 8 + xx // 8) % 2 * 255).astype(np.uint8)).expand(4, 3, 64, 64)
    turns = [board.float()]
    turns += [
        torch.rot90(t, k, dims=(-2, -1))
        for t in (board.float(), board.float().flip(-1), board.float().flip(-2), board.float().flip(-1).flip(-2))
        for k in range(4)
    ]
    monkeypatch.setattr(pretrain, "CROP_SIDE", (1.0, 1.0))
    out = pretrain._augment(board, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 64, 64) and any(torch.allclose(out, t, atol=1e-3) for t in turns)
    monkeypatch.setattr(pretrain, "CROP_SIDE", (0.5, 0.5))
    out = pretrain._augment(board, torch.Generator().manual_seed(0))
    row = out[:, 0, 32] > 127
    edges = (row[:, 1:] != row[:, :-1]).sum(1)  # 7 in the board; a 2x zoom keeps 3 or 4
    assert edges.tolist() == pytest.approx([3.5] * 4, abs=0.5)


def test_pretraining_batches_larger_than_the_distinct_captions_are_refused(tiny_world, tmp_path):
    from c2s_pipeline.config import ConfigError

    cfg = TeacherPretrainConfig(epochs=1, batch_size=21, warmup_steps=1)  # the world has at most 20 distinct captions
    with pytest.raises(ConfigError, match="teacher_pretrain.batch_size 21 is more than the .* distinct captions"):
        pretrain_teacher(tiny_world, tmp_path / "clip.pt", cfg, model_name="c2s-tiny-vit")
    assert not (tmp_path / "clip.pt").exists()


def test_training_only_the_captions_token_rows_gives_the_same_teacher_bit_for_bit(monkeypatch):
    from benchmarks.pretrain_step import every_row
    from c2s_pipeline.world import teacher_pretrain as pretrain

    cfg = TeacherPretrainConfig(lr=1e-2, weight_decay=0.1, warmup_steps=1)
    tokens = open_clip.get_tokenizer("c2s-tiny-vit")([f"a photo of a {c}." for c in CLASS_NAMES[:6]])
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    batches = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([5, 0, 2])]

    def fresh():
        register_model_configs()
        torch.manual_seed(0)
        return open_clip.create_model("c2s-tiny-vit", pretrained=None, output_dict=True)

    table_rows = []
    make_optimizer = pretrain.make_optimizer
    monkeypatch.setattr(
        pretrain,
        "make_optimizer",
        lambda m, c: table_rows.append(m.token_embedding.weight.shape[0]) or make_optimizer(m, c),
    )
    ours = fresh()
    start = ours.token_embedding.weight.detach().clone()
    pretrain.train_clip(ours, images, tokens, batches, cfg, torch.Generator().manual_seed(1), "cpu")
    reference = fresh()
    every_row(reference, images, tokens, batches, cfg, torch.Generator().manual_seed(1), "cpu")

    assert table_rows == [len(torch.unique(tokens))] and table_rows[0] < 50  # AdamW saw the used rows only
    table = ours.token_embedding.weight
    assert table.shape == start.shape  # the full table is back
    used, unused = tokens[0, 1], 100  # a caption token; one no caption has
    assert unused not in tokens
    assert not torch.equal(table[used], start[used]) and not torch.equal(table[unused], start[unused])
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_caption_token_rows_keep_the_end_token_last_and_restore_the_table():
    from c2s_pipeline.world.teacher_pretrain import CaptionTokenRows

    register_model_configs()
    model = open_clip.create_model("c2s-tiny-vit", pretrained=None)
    tokens = open_clip.get_tokenizer("c2s-tiny-vit")(["a photo of a red star.", "a photo of a blue cross."])
    full, start = model.token_embedding, model.token_embedding.weight.detach().clone()
    rows = CaptionTokenRows(model, tokens)
    assert model.token_embedding.weight.shape[0] == len(torch.unique(tokens)) < 20
    assert torch.equal(rows.remapped.argmax(-1), tokens.argmax(-1))  # argmax pooling: same positions
    assert torch.equal(model.token_embedding(rows.remapped), full(tokens))  # same vectors per position
    with torch.no_grad():
        model.token_embedding.weight += 1.0  # "training"
    rows.restore()
    others = torch.ones(len(start), dtype=torch.bool)
    others[rows.used] = False
    assert model.token_embedding is full
    assert torch.equal(full.weight[rows.used], start[rows.used] + 1.0)
    assert torch.equal(full.weight[others], start[others])


def test_encoder_pretraining_learns_from_caption_photos_only_and_feeds_the_student(tiny_world, tmp_path, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    out = tmp_path / "encoder.pt"
    metrics = pretrain_encoder(tiny_world, out, "resnet18", EncoderPretrainConfig(steps=20, batch_size=8))
    assert len(opened) == 16 and all("CaptionImages" in p for p in opened)  # no scene, no segmentation label
    assert metrics["last_loss"] < metrics["first_loss"] and 0 <= metrics["caption_top1"] <= 100
    state = torch.load(out, weights_only=True)
    encoder = Student("fpn", "resnet18", str(out), embed_dim=16).net.encoder.state_dict()
    assert all(torch.equal(encoder[k], v) for k, v in state.items()) and encoder.keys() == state.keys()


def test_caption_photos_are_held_as_uint8_and_normalised_per_batch_as_the_student_sees_images(tiny_world):
    from c2s_pipeline.student.data import image_to_tensor
    from c2s_pipeline.world.generator import caption_rows

    photos, labels = load_caption_photos(tiny_world)
    rows = caption_rows(tiny_world)
    assert photos.dtype == torch.uint8 and photos.shape == (len(rows), 3, 128, 128)
    assert photos.is_contiguous()  # a channels-last batch takes other conv kernels: another encoder in the last bits
    assert labels.tolist() == [r["classes"][0] for r in rows]
    picked = [3, 0, 3]
    expected = torch.stack(
        [image_to_tensor(np.asarray(Image.open(tiny_world / rows[i]["image"]).convert("RGB"))) for i in picked]
    )
    assert torch.equal(photo_batch(photos, torch.tensor(picked)), expected)
