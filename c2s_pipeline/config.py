"""Typed, frozen views of the `params.yaml` sections; unknown keys and wrong types fail loudly.

Each section of params.yaml maps onto one dataclass below. Student-side sections never feed
the teacher fingerprint, so changing them reuses the cached teacher store.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A params file or override that does not match the schema."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "world"          # voc | context | cocostuff | world
    root: str = "data/world"        # dataset root in its standard on-disk layout
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 128           # side of the square the teacher and student see (512 for VOC)
    context_unseen_split: str = "A"  # PASCAL Context: A (ZS3Net/MaskCLIP+/OTSeg) or B (Cascade-CLIP)


@dataclass(frozen=True)
class TeacherConfig:
    clip_model: str = "c2s-world-vit"   # open_clip model name (ViT-B-16 for real data)
    pretrained: str = "models/teacher/clip.pt"  # open_clip tag (e.g. openai) or a local checkpoint
    dense_mode: str = "maskclip"        # maskclip | clearclip | sclip
    templates: str = "single"           # single ("a photo of a {}") | ensemble (15 ZegCLIP templates)
    crop_size: int = 0                  # local-CLS crop side; 0 = the model's native image size
    view_crops: tuple[float, ...] = (0.75,)  # stored views: the whole image + 4 corner crops per fraction
    batch_size: int = 16
    max_regions: int = 16               # fixed per-image region slots in the cache
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    store_format: str = "zarr"          # zarr | h5
    workers: int = 2                    # image decode workers


@dataclass(frozen=True)
class MiningConfig:
    window_sizes: tuple[int, ...] = (4, 8)  # sliding windows O over the token grid; stride o/2
    kmeans_iters: int = 20
    merge_threshold: float = 0.9        # merge clusters whose centroids' cosine passes this
    min_region_frac: float = 0.01       # drop latent clusters smaller than this fraction of tokens
    max_latent: int = 8                 # cap on latent regions per image
    seed: int = 0


@dataclass(frozen=True)
class StudentConfig:
    arch: str = "segformer"             # any smp architecture name
    encoder: str = "mit_b0"
    encoder_weights: str | None = None  # e.g. "imagenet"; None trains from scratch (offline)
    logit_scale: float = 50.0           # tau in logits = tau * norm(F) norm(A)^T


@dataclass(frozen=True)
class LossConfig:
    use_global: bool = True
    use_local: bool = True
    use_latent: bool = True             # latent embedding generation; off = seen classes only in L_p
    temperature: float = 0.07           # InfoNCE temperature
    bank_size: int = 24                 # FIFO bank of global CLS tokens
    alpha: float = 50.0                 # scale of F.A_s in the pseudo-label logits
    beta: float = 50.0                  # scale of cos(F, A'_u)
    focal_weight: float = 100.0         # NEL = focal_weight * focal + dice_weight * dice (ZegCLIP)
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    decoder_layers: int = 2             # latent embedding generator
    decoder_heads: int = 4


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 2000
    batch_size: int = 8
    lr: float = 2e-4
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_iters: int = 100
    poly_power: float = 0.9
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    flip: bool = True
    checkpoint_every: int = 500
    log_every: int = 20
    num_workers: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True                    # autocast on CUDA only; CPU always runs fp32


@dataclass(frozen=True)
class EvalConfig:
    mode: str = "whole"                 # whole | slide
    stride: int = 0                     # slide stride; 0 = image_size * 5 / 6 (426 at 512)
    flip: bool = False
    seen_bias: float = 0.1              # subtracted from seen-class scores (ZegCLIP calibration); 0 disables
    fps_iters: int = 50
    fps_warmup: int = 10
    device: str = "auto"


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    # The zero-shot split, by class name; changing it needs no new images (only a new teacher store).
    unseen: tuple[str, ...] = ("red circle", "green square", "blue triangle", "yellow star", "red cross")
    n_train: int = 600
    n_val: int = 150
    n_caption: int = 3000               # image-caption pairs for teacher pretraining
    image_size: int = 128


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a dataclass field annotation; lists become tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")


def build_section(cls: type, values: dict[str, Any] | None, section: str) -> Any:
    """Build one frozen section dataclass from a mapping, rejecting unknown keys."""
    values = values or {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(section + '.' + k for k in unknown)}; "
            f"valid keys of '{section}': {', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def params_from_dict(raw: dict[str, Any]) -> Params:
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(hints)}")
    return Params(**{name: build_section(hints[name], raw.get(name), name) for name in hints})


def load_params(path: str | Path | None = None) -> Params:
    """Read params.yaml (or defaults when `path` is None)."""
    if path is None:
        return Params()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; pass --params PATH or run from the repo root")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at top level")
    return params_from_dict(raw)


def override(params: Params, **sections: dict[str, Any]) -> Params:
    """Return `params` with some keys replaced, e.g. override(p, train={"iterations": 10}).

    None values are skipped so CLI flags left unset do not override the file.
    """
    updates = {}
    for name, values in sections.items():
        current = getattr(params, name)
        merged = {**dataclasses.asdict(current), **{k: v for k, v in values.items() if v is not None}}
        updates[name] = build_section(type(current), merged, name)
    return dataclasses.replace(params, **updates)


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-friendly dict of a section or of Params (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(_listify(dataclasses.asdict(obj))))


def flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"seed": 0}} -> {"train.seed": 0}; lists stay values."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def changes(old: dict, new: dict, keys) -> list[str]:
    """"key old -> new" for each of `keys` whose value differs between the flat dicts `old` and `new`."""
    return [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def first_few(items: list[str], limit: int = 3) -> str:
    """"a; b; c and 2 more": a one-line listing of what differs."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x
