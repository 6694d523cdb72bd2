"""The frozen CLIP wrapper on the project's tiny open_clip config (random weights, no download)."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from c2s_pipeline.data.base import DatasetError
from c2s_pipeline.teacher.clip import FrozenCLIP, TeacherError, last_block, load_clip
from c2s_pipeline.teacher.mining import region_crops
from c2s_pipeline.teacher.registry import MODEL_CONFIG_DIR


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip("c2s-tiny-vit", None, image_size=128, dense_mode="maskclip")


def _images(n=2, size=128, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8))


def test_shapes_dtypes_and_normalisation(tiny):
    x = tiny.preprocess(_images(), 128)
    assert x.shape == (2, 3, 128, 128) and x.dtype == torch.float32
    out = tiny.encode_images(x)
    assert tiny.native_size == 64 and tiny.grid == (8, 8) and tiny.embed_dim == 32
    assert out.global_cls.shape == (2, 32) and out.dense_tokens.shape == (2, 8, 8, 32)
    torch.testing.assert_close(out.global_cls.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.dense_tokens.norm(dim=-1), torch.ones(2, 8, 8))
    assert not any(p.requires_grad for p in tiny.model.parameters())


def _stripes(size: int) -> torch.Tensor:
    """(1, size, size, 3) one-pixel vertical stripes: what a downsize without antialiasing turns into a flat colour."""
    image = np.zeros((1, size, size, 3), np.uint8)
    image[:, :, ::2] = 255
    return torch.from_numpy(image)


def test_teacher_downsizes_are_antialiased_like_preprocess(tiny):
    """The global CLS of a large view and each region crop see the image as `preprocess` would shrink it."""
    big = tiny.preprocess(_stripes(256), 256)  # 4x the native 64
    shrunk = tiny.preprocess(_stripes(256), 64)  # what open_clip's preprocess would give
    torch.testing.assert_close(tiny.encode_crops(big), tiny.encode_crops(shrunk))
    whole = torch.zeros(256, 256, dtype=torch.long)  # one region: the whole image
    crop = region_crops(big[0], whole, 1, 64)
    torch.testing.assert_close(crop, shrunk, atol=1e-5, rtol=1e-5)


def test_global_cls_is_the_standard_forward_at_native_size(tiny):
    x = tiny.preprocess(_images(), 64)
    with torch.no_grad():
        expected = F.normalize(tiny.model.encode_image(x), dim=-1)
    torch.testing.assert_close(tiny.encode_images(x).global_cls, expected)


def test_standard_dense_path_matches_the_models_own_patch_projection():
    """At native size with the unmodified last block, our token path equals open_clip's own tokens @ proj."""
    torch.manual_seed(1)
    clip = load_clip("c2s-tiny-vit", None, image_size=64, dense_mode="standard")
    x = clip.preprocess(_images(seed=1), 64)
    clip.visual.output_tokens = True
    with torch.no_grad():
        _, tokens = clip.visual(x)  # (B, N, W) after ln_post
        expected = F.normalize(tokens @ clip.visual.proj, dim=-1).view(2, 4, 4, -1)
    clip.visual.output_tokens = False
    torch.testing.assert_close(clip.encode_images(x).dense_tokens, expected, atol=1e-5, rtol=1e-5)


def _attention_pooled_clip() -> FrozenCLIP:
    """The tiny config with open_clip's attention pool of one query, as CLIP's ResNets pool
    (docs/decisions/0015-attention-pooling-not-kept.md)."""
    cfg = json.loads((MODEL_CONFIG_DIR / "c2s-tiny-vit.json").read_text())
    cfg["vision_cfg"].update(attentional_pool=True, attn_pooler_queries=1, attn_pooler_heads=2)
    return FrozenCLIP(
        open_clip.CLIP(**cfg),
        "c2s-tiny-vit",
        image_size=64,
        device=torch.device("cpu"),
        dense_mode="maskclip",
        weights_digest="0",
    )


def test_attention_pooled_dense_tokens_are_the_pool_applied_to_each_token_alone():
    """MaskCLIP on an attention-pooled tower edits the pool: each token's dense output is what open_clip's own
    pool, ln_post and projection give for that final token alone; clearclip and sclip edit the last block."""
    torch.manual_seed(2)
    clip = _attention_pooled_clip()
    v = clip.visual
    with torch.no_grad():  # open_clip initialises these to 0 / 1: random values make each of them count
        for p in (
            v.attn_pool.attn.in_proj_bias,
            v.attn_pool.attn.out_proj.bias,
            *v.attn_pool.ln_k.parameters(),
            *v.ln_post.parameters(),
        ):
            p.copy_(torch.randn_like(p))
    x = clip.preprocess(_images(seed=2), 64)
    seen = {}
    hook = v.attn_pool.register_forward_pre_hook(lambda module, args: seen.update(tokens=args[0]))
    with torch.no_grad():
        image = clip.model.encode_image(x)  # (B, D), the pool's input kept
        hook.remove()
        final = seen["tokens"][:, 1:]  # (B, 16, W) after every block
        alone = torch.cat([v.attn_pool(final[:, [i]]) for i in range(final.shape[1])], 1)  # (B, 16, D)
        expected = (v.ln_post(alone) @ v.proj).view(2, 4, 4, -1)
        tokens = clip._dense_tokens(x)
        pooled = v.ln_post(v.attn_pool(seen["tokens"]))[:, 0] @ v.proj
        clip.dense_mode = "sclip"
        edited = clip._dense_tokens(x)
    torch.testing.assert_close(pooled, image)  # the hook saw the real forward
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(edited, tokens, atol=1e-3)


def test_world_teacher_embeds_an_image_as_the_mean_of_its_patch_tokens():
    """The world's CLIP pools by averaging (docs/decisions/0010-average-pooling.md), so at native size its image
    embedding is the mean of the dense path's projected patch tokens: each token is a piece of it."""
    torch.manual_seed(2)
    clip = load_clip("c2s-world-vit", None, image_size=64, dense_mode="standard")
    x = clip.preprocess(_images(seed=2, size=64), 64)
    with torch.no_grad():
        tokens = clip._dense_tokens(x)  # (B, 8, 8, D), not normalised
        image = clip.model.encode_image(x)  # (B, D)
    assert clip.visual.pool_type == "avg" and tokens.shape == (2, 8, 8, 128)
    torch.testing.assert_close(tokens.mean((1, 2)), image, atol=1e-5, rtol=1e-5)


def test_a_two_pool_coca_tower_is_refused_with_what_to_use():
    model = open_clip.create_model("c2s-tiny-vit", pretrained=None)
    model.visual.attn_pool_contrastive = torch.nn.Identity()  # what 'parallel' / 'cascade' build
    with pytest.raises(TeacherError, match="two-pool .* no dense-token path here; use a class-token"):
        FrozenCLIP(
            model, "c2s-tiny-vit", image_size=64, device=torch.device("cpu"), dense_mode="maskclip", weights_digest="0"
        )


def test_maskclip_block_is_the_value_path_with_residual_and_mlp(tiny):
    block = tiny.visual.transformer.resblocks[-1]
    x = torch.randn(2, 5, block.ln_1.normalized_shape[0])
    width = x.shape[-1]
    w_v, b_v = block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :]
    with torch.no_grad():
        v = block.ln_1(x) @ w_v.T + b_v
        y = x + block.attn.out_proj(v)
        expected = y + block.mlp(block.ln_2(y))
        torch.testing.assert_close(last_block(block, x, "maskclip"), expected)
        # every token's output depends on that token only (no attention mixing)
        x2 = x.clone()
        x2[:, 0] += 1.0
        torch.testing.assert_close(last_block(block, x2, "maskclip")[:, 1:], expected[:, 1:])


def test_clearclip_and_sclip_differ_from_maskclip(tiny):
    block = tiny.visual.transformer.resblocks[-1]
    x = torch.randn(1, 5, block.ln_1.normalized_shape[0])
    with torch.no_grad():
        outs = {m: last_block(block, x, m) for m in ("maskclip", "clearclip", "sclip")}
    assert not torch.allclose(outs["maskclip"], outs["clearclip"])
    assert not torch.allclose(outs["clearclip"], outs["sclip"])


def test_text_embeddings_single_and_ensemble(tiny):
    single = tiny.encode_text(["red circle", "blue square"], "single")
    ensemble = tiny.encode_text(["red circle", "blue square"], "ensemble")
    assert single.shape == ensemble.shape == (2, 32)
    torch.testing.assert_close(ensemble.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(single, ensemble)
    with pytest.raises(DatasetError, match="choose one of single, ensemble"):
        tiny.encode_text(["x"], "fancy")


def test_local_checkpoint_loads_identically_and_changes_the_digest(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_clip("c2s-tiny-vit", str(path), image_size=128)
    x = tiny.preprocess(_images(), 128)
    torch.testing.assert_close(loaded.encode_images(x).dense_tokens, tiny.encode_images(x).dense_tokens)
    state = {k: v + 0.01 if k == "visual.proj" else v for k, v in tiny.model.state_dict().items()}
    other = tmp_path / "other.pt"
    torch.save(state, other)
    assert load_clip("c2s-tiny-vit", str(other), image_size=128).weights_digest != loaded.weights_digest


def test_a_checkpoint_recorded_under_another_config_is_refused(tmp_path, tiny):
    """The record that world pretraining writes beside its checkpoint names the config: weights of another
    pooling have the same keys, so only the record can tell."""
    path = tmp_path / "clip.pt"
    torch.save(tiny.model.state_dict(), path)
    recorded = open_clip.get_model_config("c2s-tiny-vit")
    (tmp_path / "clip.json").write_text(json.dumps({"model": "c2s-tiny-vit", "model_config": recorded}))
    load_clip("c2s-tiny-vit", str(path), image_size=64)  # the same config loads
    recorded["vision_cfg"]["pool_type"] = "avg"
    (tmp_path / "clip.json").write_text(json.dumps({"model": "c2s-tiny-vit", "model_config": recorded}))
    with pytest.raises(
        TeacherError,
        match=r"pretrained under another c2s-tiny-vit config \(vision_cfg.pool_type "
        r"'avg' -> None\); pretrain it again",
    ):
        load_clip("c2s-tiny-vit", str(path), image_size=64)
    (tmp_path / "clip.json").write_text(json.dumps({"loss_after": 1.0}))  # a record from before: unchecked
    load_clip("c2s-tiny-vit", str(path), image_size=64)


def test_bad_weights_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherError, match="unknown pretrained tag 'nope'.*valid tags: .*openai"):
        load_clip("ViT-B-16", "nope", image_size=224)
    with pytest.raises(TeacherError, match="checkpoint file .*missing.pt not found"):
        load_clip("c2s-tiny-vit", str(tmp_path / "missing.pt"), image_size=64)
    with pytest.raises(TeacherError, match="unknown dense_mode"):
        load_clip("c2s-tiny-vit", None, image_size=64, dense_mode="magic")
    bad = tmp_path / "bad.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, bad)
    with pytest.raises(TeacherError, match="does not fit model"):
        load_clip("c2s-tiny-vit", str(bad), image_size=64)


def test_offline_tag_fails_fast_with_instructions(monkeypatch):
    """A valid tag whose weights are not in the hub cache: one line naming the tag and the fix."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "create_model", _raise_offline)
    with pytest.raises(TeacherError, match="could not load CLIP weights 'openai' for ViT-B-16.*--pretrained") as err:
        load_clip("ViT-B-16", "openai", image_size=512)
    assert "\n" not in str(err.value)


def _raise_offline(*args, **kwargs):
    if kwargs.get("pretrained"):
        raise OSError("We have no connection or you passed local_files_only")
    raise AssertionError("unexpected")


def test_students_and_world_pretraining_normalise_pixels_exactly_as_the_teacher_does(tiny):
    """`clip_normalise` (training never imports open_clip, so it holds a copy of CLIP's constants) is the
    teacher's preprocess at native size, bit for bit."""
    from c2s_pipeline.data.transforms import clip_normalise

    images = _images(size=64, seed=4)  # (B, 64, 64, 3) uint8
    assert torch.equal(clip_normalise(images.permute(0, 3, 1, 2)), tiny.preprocess(images, 64))
