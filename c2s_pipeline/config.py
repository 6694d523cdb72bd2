"""Typed, frozen views of the `params.yaml` sections; unknown keys and wrong types fail loudly.

Each section of params.yaml maps onto one dataclass below. Student-side sections never feed
the teacher fingerprint, so changing them reuses the cached teacher store.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A params file or override that does not match the schema."""


def bounded(
    default: Any,
    *,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    below: float | None = None,
    multiple: int | None = None,
    nonempty: bool = False,
):
    """A field whose value (each value, for a list) must be >= low, > above, <= high, < below and a multiple of
    `multiple`; lists non-empty.

    `build_section` checks it and names the key and the allowed range.
    """
    return field(
        default=default,
        metadata={"low": low, "above": above, "high": high, "below": below, "multiple": multiple, "nonempty": nonempty},
    )


def path_field(default: str | None, *, required: str | None = None):
    """A file or folder (or a name standing for one, like an open_clip tag). The library names no project path:
    params files and the CLI declare them. `required`: what a params file must set here, said when it does not."""
    return field(default=default, metadata={"path": True, "required": required})


def one_of(default: str, *others: str):
    """A string field that takes one of a few values; `build_section` names them when it gets another."""
    return field(default=default, metadata={"choices": (default, *others)})


# A device as torch names it: whether this machine has it is checked when a command runs (c2s_pipeline.stages.common).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def device_field():
    """A device field: auto (CUDA when present), cpu, cuda, cuda:N or mps."""
    return field(default="auto", metadata={"pattern": DEVICE_PATTERN, "words": "auto, cpu, cuda, cuda:N or mps"})


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta.get("pattern") and not (isinstance(value, str) and re.fullmatch(meta["pattern"], value)):
        raise ConfigError(f"{key}: {value!r} is not a device; use {meta['words']}")
    if meta.get("nonempty") and not value:
        raise ConfigError(f"{key}: the list is empty; it needs at least one value")
    low, above, high, below = meta.get("low"), meta.get("above"), meta.get("high"), meta.get("below")
    allowed = " and ".join(
        f"{op} {b}" for op, b in ((">=", low), (">", above), ("<=", high), ("<", below)) if b is not None
    )
    for v in value if isinstance(value, tuple) else (value,):
        if (
            (low is not None and v < low)
            or (above is not None and v <= above)
            or (high is not None and v > high)
            or (below is not None and v >= below)
        ):
            raise ConfigError(f"{key}: {v!r} is out of range; allowed: {allowed}")
        if meta.get("multiple") and v % meta["multiple"]:
            raise ConfigError(
                f"{key}: {v!r} is not a multiple of {meta['multiple']} (the student's encoders "
                f"downsample by {meta['multiple']})"
            )


@dataclass(frozen=True)
class DataConfig:
    # data.registry.DATASETS reads each (tests/test_data.py keeps the two lists equal); folder: your own data
    dataset: str = one_of("world", "voc", "context", "cocostuff", "ade20k", "folder")
    root: str = path_field("", required="the dataset's folder, in its standard layout")
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = bounded(128, low=32, multiple=32)  # side the teacher and student see (512 for VOC)
    context_unseen_split: str = "A"  # PASCAL Context: A (ZS3Net/MaskCLIP+/OTSeg) or B (Cascade-CLIP)
    unseen: tuple[str, ...] = ()  # folder (your own data) and ade20k: the unseen classes, by name
    # what a store's data digest reads of each file: stat (name, size, mtime; cheap) | content (every byte;
    # sees a rewrite that keeps size and mtime; reads the whole split: cache/fingerprint.data_digest)
    digest: str = one_of("stat", "content")


@dataclass(frozen=True)
class TeacherConfig:
    clip_model: str = "c2s-world-vit"  # open_clip model name (ViT-B-16 for real data)
    # open_clip tag (e.g. openai) or a local checkpoint; "" = random weights (benchmarks only)
    pretrained: str = path_field("", required="an open_clip tag (e.g. openai) or a local checkpoint file")
    dense_mode: str = one_of("maskclip", "clearclip", "sclip", "standard")  # standard: the unmodified tower
    # which stores keep the dense tokens (~95 % of a store; only CLIP's own dense baseline reads them):
    # eval = every split but data.train_split | all
    dense_tokens: str = one_of("eval", "all")
    # auto (the dataset's own: single for VOC and the world, ensemble for Context / COCO-Stuff) | single
    # ("a photo of a {}.") | ensemble (15)
    templates: str = one_of("auto", "single", "ensemble")
    crop_size: int = bounded(0, low=0)  # local-CLS crop side; 0 = the model's native image size
    # the views whose global CLS is stored, the only pixels the student is shown (docs/DESIGN.md, Views):
    # corners = the S x S image + 4 corner crops per view_crops fraction; bank = view_count crops per image
    # drawn as MMSeg draws a training crop (ratio-kept resize of view_scale x a ratio in view_ratio, an S x S
    # window with cat_max_ratio judged on seen labels, padded)
    views: str = one_of("corners", "bank")
    view_crops: tuple[float, ...] = bounded((0.75,), above=0, below=1)
    view_count: int = bounded(8, low=1, high=255)
    view_scale: tuple[int, int] = bounded((512, 128), low=1)  # (long, short) side at ratio 1; (4 S, S)
    view_ratio: tuple[float, float] = bounded((0.5, 2.0), above=0)
    cat_max_ratio: float = bounded(0.75, above=0, high=1)  # 1 = any window
    batch_size: int = bounded(16, low=1)
    max_regions: int = bounded(16, low=1, high=255)  # fixed per-image region slots in the cache
    device: str = device_field()
    store_format: str = one_of("zarr", "h5")
    workers: int = bounded(2, low=0)  # image decode workers


@dataclass(frozen=True)
class MiningConfig:
    # sliding windows O over the token grid; stride o/2
    window_sizes: tuple[int, ...] = bounded((4, 8), low=1, nonempty=True)
    kmeans_iters: int = bounded(20, low=1)
    merge_threshold: float = bounded(0.9, low=-1, high=1)  # merge clusters whose centroids' cosine passes this
    # drop latent clusters smaller than this fraction of tokens
    min_region_frac: float = bounded(0.01, low=0, high=1)
    max_latent: int = bounded(8, low=0)  # cap on latent regions per image
    seed: int = bounded(0, low=0)


STUDENT_HEADS = ("linear", "isometric")


@dataclass(frozen=True)
class StudentConfig:
    arch: str = "fpn"  # any smp architecture name
    encoder: str = "resnet18"
    encoder_weights: str | None = path_field(None)  # a local state_dict, "imagenet" (smp), None (random init)
    # tau in logits = tau * cos(F, A): the seen-class logits of training (the paper's alpha), evaluation and
    # prediction; saved with the student.
    logit_scale: float = bounded(50.0, above=0)
    # the 1x1 head W from the decoder to D: linear (the paper's), or isometric (W^T W = I), whose feature
    # norm is nearly free at inference (docs/decisions/0008-isometric-head.md)
    head: str = one_of(*STUDENT_HEADS)
    # the mean / std the student's input is normalised with: its encoder's pretraining (clip for the world's
    # encoder, trained on CLIP-normalised caption photos; imagenet for smp/timm ImageNet weights)
    normalisation: str = one_of("clip", "imagenet")
    # seen-class logits in training, evaluation and prediction: cosine = tau cos(F, A_s); dot = the paper's
    # alpha F^T A_s (unit text rows, raw features; docs/DESIGN.md, Student)
    seen_logits: str = one_of("cosine", "dot")


@dataclass(frozen=True)
class LossConfig:
    use_global: bool = True
    use_local: bool = True
    use_latent: bool = True  # latent embedding generation; off = seen classes only in L_p
    temperature: float = bounded(0.07, above=0)  # InfoNCE temperature
    bank_size: int = bounded(24, low=0)  # FIFO bank of global CLS tokens
    beta: float = bounded(50.0, above=0)  # scale of cos(F, A'_u)
    focal_weight: float = bounded(1.0, low=0)  # NEL = focal_weight * focal + dice_weight * dice (ZegCLIP: 100)
    dice_weight: float = bounded(1.0, low=0)
    ce_weight: float = bounded(1.0, low=0)
    # grouped: mean over seen pixels + mean over latent pixels; pooled: one mean over both
    # (docs/decisions/0014-grouped-cross-entropy.md)
    ce_reduction: str = one_of("grouped", "pooled")
    decoder_layers: int = bounded(2, low=1)  # latent embedding generator
    decoder_heads: int = bounded(4, low=1)


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = bounded(1200, low=1)
    batch_size: int = bounded(8, low=1)
    lr: float = bounded(1e-3, above=0)
    head_lr_mult: float = bounded(1.0, above=0)
    weight_decay: float = bounded(0.01, low=0)
    warmup_iters: int = bounded(100, low=0)
    poly_power: float = bounded(0.9, low=0)
    min_lr: float = bounded(1e-6, low=0)
    grad_clip: float = bounded(0.0, low=0)  # 0 = off
    # weight decay on normalisation layers' parameters (LayerNorm, BatchNorm, GroupNorm); MMSeg's SegFormer
    # recipe gives them none (custom_keys norm: decay_mult 0)
    decay_norms: bool = True
    flip: bool = True
    # MMSeg's PhotoMetricDistortion on the student's input only (the teacher's CLS is of the plain view)
    photometric: bool = False
    checkpoint_every: int = bounded(250, low=1)
    log_every: int = bounded(20, low=1)
    num_workers: int = bounded(2, low=0)
    seed: int = bounded(0, low=0)
    device: str = device_field()
    amp: bool = True  # autocast on CUDA only; CPU always runs fp32


@dataclass(frozen=True)
class EvalConfig:
    mode: str = one_of("whole", "slide")
    stride: int = bounded(0, low=0)  # slide stride; 0 = image_size * 5 / 6 (426 at 512)
    flip: bool = False
    seen_bias: float = bounded(0.1, low=-1, high=1)  # subtracted from seen scores (ZegCLIP); 0 disables
    # scores the bias acts on, per slide window before merging: softmax over classes, or ZegCLIP's
    # per-class sigmoid (what the NEL's focal + dice train when they dominate the loss)
    calibration: str = one_of("softmax", "sigmoid")
    fps_iters: int = bounded(50, low=1)
    fps_warmup: int = bounded(10, low=0)
    device: str = device_field()


@dataclass(frozen=True)
class PredictConfig:
    """What `c2s predict`, `c2s serve` and the exported graph's post-processing do with pixels no typed name fits
    (eval.open_vocab.label_pixels); `c2s evaluate` labels every pixel whatever these say (the paper protocol)."""

    # threshold: unlabelled where the best class probability is below `threshold`; none: every pixel gets a
    # typed name; background: the `background` names join the vocabulary and their pixels are unlabelled.
    # Threshold 0.7 leaves 94 % of the world's background unlabelled and raises the typed classes' mIoU
    # from 27.8 to 46.8 (docs/decisions/0051-unlabelled-pixels.md).
    unlabelled: str = one_of("threshold", "none", "background")
    threshold: float = bounded(0.7, low=0, high=1)  # on the best class probability (softmax over the names)
    background: tuple[str, ...] = bounded(("background",), nonempty=True)
    opacity: float = bounded(0.5, low=0, high=1)  # of the class colours over the image


@dataclass(frozen=True)
class WorldConfig:
    seed: int = bounded(0, low=0)
    # The zero-shot split, by class name; changing it needs no new images (only a new teacher store).
    unseen: tuple[str, ...] = bounded(
        ("red circle", "green square", "blue triangle", "yellow star", "red cross"), nonempty=True
    )
    n_train: int = bounded(600, low=1)
    n_val: int = bounded(150, low=1)
    n_caption: int = bounded(3000, low=1)  # image-caption pairs for teacher pretraining
    image_size: int = bounded(128, low=1)


@dataclass(frozen=True)
class TeacherPretrainConfig:
    epochs: int = bounded(16, low=1)
    batch_size: int = bounded(20, low=1)  # at most the world's distinct captions (20): a batch never repeats one
    lr: float = bounded(1e-3, above=0)
    weight_decay: float = bounded(0.1, low=0)
    warmup_steps: int = bounded(50, low=0)
    seed: int = bounded(0, low=0)


@dataclass(frozen=True)
class EncoderPretrainConfig:
    """The world's stand-in for ImageNet weights: the student's encoder as a classifier of the caption photos."""

    steps: int = bounded(600, low=1)
    batch_size: int = bounded(32, low=1)
    lr: float = bounded(1e-3, above=0)
    weight_decay: float = bounded(0.01, low=0)
    seed: int = bounded(0, low=0)


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    teacher_pretrain: TeacherPretrainConfig = field(default_factory=TeacherPretrainConfig)
    encoder_pretrain: EncoderPretrainConfig = field(default_factory=EncoderPretrainConfig)


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
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")


def build_section(cls: type, values: dict[str, Any] | None, section: str) -> Any:
    """Build one frozen section dataclass from a mapping, rejecting unknown keys and values out of range."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(section + '.' + k for k in unknown)}; "
            f"valid keys of '{section}': {', '.join(sorted(known))}"
        )
    if unset := [f for f in dataclasses.fields(cls) if f.metadata.get("required") and f.name not in values]:
        raise ConfigError(f"{section}.{unset[0].name} is not set: give {unset[0].metadata['required']}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    for f in dataclasses.fields(cls):
        if f.name in kwargs and f.metadata and not f.metadata.get("path"):
            _check_range(f"{section}.{f.name}", kwargs[f.name], f.metadata)
    return cls(**kwargs)


# Sections that have another name now: a params file naming the old one is told the new.
RENAMED_SECTIONS = {"pretrain": "teacher_pretrain"}


def params_from_dict(raw: dict[str, Any]) -> Params:
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(raw) - set(hints))
    if renamed := [s for s in unknown if s in RENAMED_SECTIONS]:
        raise ConfigError("; ".join(f"section {s} is now called {RENAMED_SECTIONS[s]}: rename it" for s in renamed))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(hints)}")
    return Params(**{name: build_section(hints[name], raw.get(name), name) for name in hints})


def load_params(path: str | Path | None = None) -> Params:
    """Read params.yaml (or defaults when `path` is None)."""
    if path is None:
        return Params()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"params file {path} not found; run c2s in the project folder (where params.yaml is) or pass --params PATH"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path} is not valid YAML{where} ({getattr(err, 'problem', None) or err}); fix it and run again"
        ) from None
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
    """ "key old -> new" for each of `keys` whose value differs between the flat dicts `old` and `new`."""
    return [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def first_few(items: list[str], limit: int = 3) -> str:
    """ "a; b; c and 2 more": a one-line listing of what differs."""
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
