"""The frozen open_clip teacher: global CLS, text-aligned dense tokens, crop and text embeddings.

The model is built at its native size, so checkpoints load unchanged and the global CLS comes from
the standard forward; the dense path re-runs the vision tower with position embeddings interpolated
to the requested image size and its last attention modified (MaskCLIP by default).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from c2s_pipeline.config import changes, first_few, flatten
from c2s_pipeline.data.prompts import template_list
from c2s_pipeline.teacher.registry import register_model_configs, weights_digest

log = logging.getLogger(__name__)

DENSE_MODES = ("maskclip", "clearclip", "sclip", "standard")  # standard: tower unmodified (checks; = maskclip
# when an attention pool forms the embedding)


class TeacherError(RuntimeError):
    """The teacher cannot be built as asked; one line that says what to do."""


@dataclass(frozen=True)
class TeacherImageOutput:
    global_cls: torch.Tensor  # (B, D) L2-normalised
    dense_tokens: torch.Tensor  # (B, h, w, D) L2-normalised per token


def _create(model_name: str, pretrained: str | None) -> torch.nn.Module:
    register_model_configs()
    if model_name not in open_clip.list_models():
        raise TeacherError(f"unknown open_clip model '{model_name}'; see open_clip.list_models()")
    if not pretrained:
        log.warning("teacher %s has random weights (tests only)", model_name)
        return open_clip.create_model(model_name, pretrained=None)
    path = Path(pretrained)
    if path.is_file():
        check_recorded_config(model_name, path)
        try:
            return open_clip.create_model(model_name, pretrained=str(path))
        except (RuntimeError, KeyError, ValueError) as err:
            raise TeacherError(
                f"checkpoint {path} does not fit model {model_name} "
                f"({err.__class__.__name__}); pass the matching --clip"
            ) from None
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
        raise TeacherError(f"checkpoint file {path} not found; pass an existing file or an open_clip tag")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise TeacherError(
            f"unknown pretrained tag '{pretrained}' for {model_name}; "
            f"valid tags: {', '.join(tags) or 'none'}, or a local checkpoint path"
        )
    try:
        return open_clip.create_model(model_name, pretrained=pretrained)
    except Exception as err:  # noqa: BLE001 - hub/network errors come in many classes
        raise TeacherError(
            f"could not load CLIP weights '{pretrained}' for {model_name} (offline? "
            f"{err.__class__.__name__}): download them on a connected machine with open_clip "
            "or pass --pretrained /path/to/checkpoint.pt"
        ) from None


def check_recorded_config(model_name: str, checkpoint: Path) -> None:
    """Refuse a checkpoint whose record (the JSON beside it that `c2s world pretrain-teacher` writes) names another
    config of this model: weights of a class-token-pooled world CLIP load into an average-pooled config
    without any error, as the two have the same parameters (other edits fail to load, less clearly).
    Checkpoints without a record load unchecked."""
    try:
        recorded = json.loads(checkpoint.with_suffix(".json").read_text()).get("model_config")
    except (OSError, ValueError, AttributeError):
        return
    current = open_clip.get_model_config(model_name)
    if recorded is None or current is None or recorded == current:
        return
    old, new = flatten(recorded), flatten(current)
    raise TeacherError(
        f"checkpoint {checkpoint} was pretrained under another {model_name} config "
        f"({first_few(changes(old, new, sorted(set(old) | set(new))))}); pretrain it again "
        "(`dvc repro pretrain_teacher` or `c2s world pretrain-teacher`)"
    )


def load_clip(
    model_name: str,
    pretrained: str | None,
    *,
    image_size: int,
    device: str | torch.device = "cpu",
    dense_mode: str = "maskclip",
) -> FrozenCLIP:
    """Build the frozen teacher from an open_clip tag or a local checkpoint."""
    if dense_mode not in DENSE_MODES:
        raise TeacherError(f"unknown dense_mode '{dense_mode}'; choose one of {', '.join(DENSE_MODES)}")
    model = _create(model_name, pretrained)
    return FrozenCLIP(
        model,
        model_name,
        image_size=image_size,
        device=torch.device(device),
        dense_mode=dense_mode,
        weights_digest=weights_digest(model_name, pretrained),
    )


class FrozenCLIP:
    """Inference-only CLIP: eval mode, no gradients, fp32 on CPU and autocast on CUDA."""

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        *,
        image_size: int,
        device: torch.device,
        dense_mode: str,
        weights_digest: str,
    ):
        # open_clip's towers: their submodules are attributes torch's stubs cannot name
        self.model: Any = cast(Any, model.eval().requires_grad_(False).to(device))
        self.visual: Any = self.model.visual
        if getattr(self.visual, "attn_pool_contrastive", None) is not None:
            raise TeacherError(
                f"{model_name} pools by open_clip's two-pool (CoCa 'parallel' / 'cascade') attention, "
                "which has no dense-token path here; use a class-token, average or single "
                "attention-pooled config"
            )
        self.model_name, self.image_size, self.device = model_name, image_size, device
        self.dense_mode, self.weights_digest = dense_mode, weights_digest
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.patch = self.visual.conv1.stride[0]
        self.native_size = (
            self.visual.image_size[0] if isinstance(self.visual.image_size, tuple) else self.visual.image_size
        )
        self.grid = (image_size // self.patch, image_size // self.patch)
        self.embed_dim = self.visual.output_dim
        cfg = getattr(self.visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(1, 3, 1, 1)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _autocast(self):
        return torch.autocast("cuda", enabled=self.device.type == "cuda")

    def preprocess(self, images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, size, size) float, CLIP-normalised, on the teacher's device."""
        x = torch.as_tensor(np.asarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> TeacherImageOutput:
        """x (B, 3, S, S) normalised -> global CLS (B, D) at native size and dense tokens (B, h, w, D)."""
        with self._autocast():
            dense = self._dense_tokens(x)
            glob = self.encode_crops(x)
        return TeacherImageOutput(global_cls=glob, dense_tokens=F.normalize(dense.float(), dim=-1))

    @torch.no_grad()
    def encode_crops(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) normalised -> (B, D) L2-normalised, through the standard forward at native size."""
        if x.shape[-1] != self.native_size:  # antialiased like preprocess: a downsized crop must not alias
            x = F.interpolate(x, size=(self.native_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        with self._autocast():
            return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, class_names: list[str], templates: str | tuple[str, ...] = "single") -> torch.Tensor:
        """(C, D): per class, normalise each template's embedding, average, normalise again. `templates`: a prompt
        set by name, or templates with one {} each (a folder's classes.yaml)."""
        templates = template_list(templates)
        prompts = [t.format(c) for c in class_names for t in templates]
        with self._autocast():
            emb = self.model.encode_text(self.tokenizer(prompts).to(self.device)).float()
        emb = F.normalize(emb, dim=-1).view(len(class_names), len(templates), -1)  # (C, T, D)
        return F.normalize(emb.mean(1), dim=-1)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """(1 + h*w, W) position embeddings, the patch grid resized bicubically, the CLS position kept."""
        if (h, w) not in self._pos_cache:
            pos = self.visual.positional_embedding
            g = int(round((pos.shape[0] - 1) ** 0.5))
            grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, W, g, g)
            if (h, w) != (g, g):
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            self._pos_cache[(h, w)] = torch.cat([pos[:1], grid.flatten(2)[0].T], 0)
        return self._pos_cache[(h, w)]

    def _dense_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, h, w, D) patch tokens projected to the joint space (not normalised)."""
        v = self.visual
        t = v.conv1(x)  # (B, W, h, w)
        b, width, h, w = t.shape
        t = t.reshape(b, width, h * w).permute(0, 2, 1)  # (B, hw, W)
        cls = v.class_embedding.to(t.dtype).view(1, 1, width).expand(b, 1, width)
        t = v.ln_pre(torch.cat([cls, t], 1) + self._pos_embed(h, w).to(t.dtype))  # (B, 1+hw, W)
        seq_first = not getattr(v.transformer, "batch_first", True)
        blocks = v.transformer.resblocks
        pool = getattr(v, "attn_pool", None)
        # MaskCLIP edits the last attention that forms the image embedding: the last block's when the CLS
        # token pools, the pool's own when an attention pool does (as for CLIP's ResNets). ClearCLIP and
        # SCLIP edit the last block either way.
        edit_last_block = pool is None or self.dense_mode in ("clearclip", "sclip")
        t = t.transpose(0, 1) if seq_first else t
        for block in blocks[:-1] if edit_last_block else blocks:
            t = block(t)
        t = t.transpose(0, 1) if seq_first else t
        if edit_last_block:
            t = last_block(blocks[-1], t, self.dense_mode, seq_first)
        t = t[:, 1:] if pool is None else attention_pool_values(pool, t[:, 1:])
        t = v.ln_post(t) @ v.proj  # (B, hw, D)
        return t.reshape(b, h, w, -1)


def attention_pool_values(pool: Any, tokens: torch.Tensor) -> torch.Tensor:  # an open_clip AttentionalPooler
    """(B, N, W) -> (B, N, D): each token through an open_clip AttentionalPooler's value path and output
    projection, which is what the pool returns for a sequence of that token alone (softmax over one key)."""
    attn = pool.attn
    e = attn.embed_dim
    weight = attn.in_proj_weight[2 * e :] if attn.in_proj_weight is not None else attn.v_proj_weight
    bias = attn.in_proj_bias[2 * e :] if attn.in_proj_bias is not None else None
    return attn.out_proj(F.linear(pool.ln_k(tokens), weight, bias))


def last_block(block: Any, x: torch.Tensor, mode: str, seq_first: bool = False) -> torch.Tensor:  # open_clip's
    """The last transformer block on batch-first x (B, N, W) under a dense mode.

    maskclip: attention replaced by its value path, residual and MLP kept (MaskCLIP).
    clearclip: q-q attention, no residual, no MLP. sclip: q-q + k-k attention, no residual, no MLP.
    standard: the block unchanged.
    """
    if mode == "standard":
        return block(x.transpose(0, 1)).transpose(0, 1) if seq_first else block(x)
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    if mode == "maskclip":
        out = attn.out_proj(v)
        ln_attn = getattr(block, "ln_attn", torch.nn.Identity())
        x = x + block.ls_1(ln_attn(out))
        return x + block.ls_2(block.mlp(block.ln_2(x)))
    b, n, width = q.shape
    q, k, v = (t.reshape(b, n, heads, width // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, N, hd)
    scale = (width // heads) ** -0.5
    weights = ((q @ q.transpose(-2, -1)) * scale).softmax(-1)
    if mode == "sclip":
        weights = weights + ((k @ k.transpose(-2, -1)) * scale).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, width)  # (B, N, W)
    return attn.out_proj(out)
