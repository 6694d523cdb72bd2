"""The student: any smp architecture whose head emits D = CLIP-width channels at the decoder's stride.

The classifier is the fixed text-embedding matrix, so inference adds no parameters; the C-class
logits, never the D-channel map, are upsampled to the input size.

The head is the 1x1 conv W (D x K) from the decoder's K channels to D. `linear` (the paper's) leaves W
free; `isometric` keeps its columns orthonormal (W^T W = I, needs K <= D), so the feature norm that the
cosine divides by costs K per pixel at inference instead of K^2 (see folded_logits).
Why the isometric head is an option and not the default: docs/decisions/0008-isometric-head.md.
"""

from __future__ import annotations

import copy
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from c2s_pipeline.config import STUDENT_HEADS
from c2s_pipeline.student.torch_files import safe_load


class StudentError(ValueError):
    """An architecture or encoder smp does not provide; lists the choices."""


LOGIT_FORMS = ("cosine", "dot")


def class_logits(features: torch.Tensor, text: torch.Tensor, scale: float, form: str = "cosine") -> torch.Tensor:
    """The one classifier: scale * cos(F, A) (cosine) or the paper's scale * F^T A with unit text rows (dot);
    features (B, D, h, w), text (C, D) shared by the batch or (B, C, D) per image -> (B, C, h, w)."""
    unit = scale * F.normalize(text, dim=-1)
    if form == "cosine":
        return scaled_cosine(features, unit)
    b, _, h, w = features.shape
    return (unit @ features.flatten(2)).view(b, -1, h, w)


def scaled_cosine(features: torch.Tensor, scaled_unit_text: torch.Tensor) -> torch.Tensor:
    """s_c cos(F, A_c) for text rows of norm s_c: (B, D, h, w), (C, D) or (B, C, D) -> (B, C, h, w).

    (A F) / |F| rather than A (F / |F|): the same numbers, but the D-channel map is never divided and its
    backward is one matmul and one scaling instead of a normalize's passes over B x D x h x w.
    """
    b, _, h, w = features.shape
    flat = features.flatten(2)  # (B, D, hw)
    inv_norm = 1.0 / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, 1, hw), as F.normalize
    return ((scaled_unit_text @ flat) * inv_norm).view(b, -1, h, w)


def is_weights_file(encoder_weights: str | None) -> bool:
    """A local state_dict of the encoder (offline ImageNet weights, `c2s world pretrain-encoder`), not a name
    that smp downloads: a file, or anything path-like (so a missing file is named as such)."""
    return encoder_weights is not None and (
        Path(encoder_weights).suffix in (".pt", ".pth") or "/" in encoder_weights or Path(encoder_weights).is_file()
    )


class OrthonormalColumns(nn.Module):
    """Parametrization of a (D, K, 1, 1) conv weight as the Q of its QR (signs fixed so Q is a smooth map)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        q, r = torch.linalg.qr(weight.flatten(1))  # (D, K), (K, K)
        sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
        return (q * sign).view_as(weight)


class Student(nn.Module):
    def __init__(
        self,
        arch: str = "segformer",
        encoder: str = "mit_b0",
        encoder_weights: str | None = None,
        embed_dim: int = 512,
        head: str = "linear",
        logits: str = "cosine",
    ):
        super().__init__()
        if head not in STUDENT_HEADS:
            raise StudentError(f"unknown student.head '{head}'; choose {' or '.join(STUDENT_HEADS)}")
        if logits not in LOGIT_FORMS:
            raise StudentError(f"unknown student.seen_logits '{logits}'; choose {' or '.join(LOGIT_FORMS)}")
        self.logit_form = logits
        weights_file = is_weights_file(encoder_weights)
        try:
            self.net = smp.create_model(
                arch, encoder_name=encoder, classes=embed_dim, encoder_weights=None if weights_file else encoder_weights
            )
        except KeyError as err:
            archs = ", ".join(sorted(getattr(smp, "MODEL_ARCHITECTURES_MAPPING", {}))) or "see smp docs"
            raise StudentError(
                f"smp has no {err}; architectures: {archs}; encoders: smp.encoders.get_encoder_names()"
            ) from None
        if weights_file and encoder_weights is not None:
            load_encoder_weights(self.net.encoder, encoder_weights, encoder)
        self.net.segmentation_head[1] = nn.Identity()  # keep D channels at the decoder's own stride
        self.embed_dim, self.head_type = embed_dim, head
        if head == "isometric":
            conv = self.net.segmentation_head[0]
            if conv.kernel_size != (1, 1) or conv.in_channels > embed_dim:
                raise StudentError(
                    f"student.head isometric needs a 1x1 head from at most embed_dim={embed_dim} "
                    f"decoder channels; {arch} has a {conv.kernel_size} head from "
                    f"{conv.in_channels}: use student.head linear"
                )
            parametrize.register_parametrization(conv, "weight", OrthonormalColumns())

    def _head_weight(self) -> torch.Tensor:
        """The head conv's weight. An isometric head's QR (~3 ms for 512 x 256) is redone only when its free
        matrix changed, if no gradient is needed: comparing values is exact whatever changed it (a step,
        load_state_dict, a move or cast) and costs ~0.1 ms."""
        conv = self.net.segmentation_head[0]
        if not parametrize.is_parametrized(conv, "weight") or torch.is_grad_enabled():
            return conv.weight
        free = conv.parametrizations.weight.original
        source = getattr(self, "_frozen_head", (None,))[0]
        if (
            source is None
            or source.device != free.device
            or source.dtype != free.dtype
            or not torch.equal(source, free)
        ):
            self._frozen_head = (free.detach().clone(), conv.weight.detach())
        return self._frozen_head[1]

    def with_fixed_head(self) -> Student:
        """This student, or for an isometric head a copy whose head is a plain conv holding the orthonormal
        weight (ONNX has no QR).

        The parametrized conv is replaced, not un-parametrized: remove_parametrizations would edit the
        class it shares with this student's conv."""
        conv = self.net.segmentation_head[0]
        if not parametrize.is_parametrized(conv, "weight"):
            return self
        fixed = copy.deepcopy(self)
        fixed.__dict__.pop("_frozen_head", None)
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, 1).to(conv.bias)
        with torch.no_grad():
            plain.weight.copy_(conv.weight)
            plain.bias.copy_(conv.bias)  # type: ignore[union-attr]
        fixed.net.segmentation_head[0] = plain
        return fixed

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.net.encoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> dense features (B, D, h, w)."""
        return self.net(x)

    def predict_logits(self, x: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W): class logits (of this student's form) at feature stride, then upsampled."""
        return F.interpolate(
            self.stride_logits(x, text, scale), size=x.shape[-2:], mode="bilinear", align_corners=False
        )

    def predict_labels(self, x: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W) class ids: predict_logits' argmax at every pixel, made channels-last
        (upsampled_argmax), the cheaper layout for a class map from any head."""
        return upsampled_argmax(self.stride_logits(x, text, scale), x.shape[-2:])

    def stride_logits(self, x: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w): class logits at the decoder's stride.

        With a 1x1 head conv the text matrix is folded into it, so the D-channel map is never built:
        the same logits as class_logits(self(x), ...) at a fraction of the head's cost (see folded_logits).
        """
        conv = self.net.segmentation_head[0]
        if conv.kernel_size != (1, 1) or conv.bias is None:
            return class_logits(self(x), text, scale, self.logit_form)
        self.net.check_input_shape(x)
        hidden = self.net.decoder(self.net.encoder(x))
        return folded_logits(
            hidden,
            self._head_weight()[:, :, 0, 0],
            conv.bias,
            text,
            scale,
            orthonormal=self.head_type == "isometric",
            cosine=self.logit_form == "cosine",
        )


def folded_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    text: torch.Tensor,
    scale: float,
    orthonormal: bool = False,
    cosine: bool = True,
) -> torch.Tensor:
    """scale * cos(W h + b, t) without forming W h + b: hidden (B, K, h, w), weight (D, K), bias (D,), text (C, D).
    With cosine False, scale * t.(W h + b) (the dot form): the numerator alone.

    Numerator t.(W h + b) = (t W).h + t.b costs C*K per pixel; the squared norm
    |W h + b|^2 = h.(W^T W) h + 2 (W^T b).h + b.b costs K*K, against D*K for the D-channel map, and K
    when W's columns are `orthonormal` (W^T W = I: h.h). Computed in fp32, autocast off, so the quadratic
    form keeps its precision.
    """
    hidden, weight, bias = hidden.float(), weight.float(), bias.float()
    with torch.autocast(hidden.device.type, enabled=False):
        unit_text = F.normalize(text.float(), dim=-1)  # (C, D)
        # One 1x1 conv, as a plain C-class head: the C numerators and the norm's linear part 2 (W^T b).h + b.b.
        rows = torch.cat([unit_text @ weight, 2 * (bias @ weight)[None]])  # (C + 1, K)
        offsets = torch.cat([unit_text @ bias, (bias @ bias)[None]])  # (C + 1,)
        linear = F.conv2d(hidden, rows[:, :, None, None], offsets)
        if not cosine:
            return scale * linear[:, :-1]
        gram_h = hidden if orthonormal else F.conv2d(hidden, (weight.T @ weight)[:, :, None, None])  # (B, K, h, w)
        sq_norm = (hidden * gram_h).sum(1) + linear[:, -1]
        return scale * linear[:, :-1] / sq_norm.clamp_min(0).sqrt().clamp_min(1e-12)[:, None]


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B, C, h, w) -> (B, H, W): the argmax over classes of the logits bilinearly resized to `size`.

    Channels-last, so each pixel's C scores lie side by side for the argmax; channels-first, the argmax strides
    over H x W floats per class, which at 512 px and 171 classes takes twice the resize itself.
    """
    logits = logits.contiguous(memory_format=torch.channels_last)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False).argmax(1)


def load_encoder_weights(encoder: torch.nn.Module, path: str | Path, name: str) -> None:
    """Load a state_dict file into the student's smp encoder `name`, safely; a file of another encoder is one
    StudentError line."""
    fix = (
        f"pass a state_dict file of smp's {name} encoder (`c2s world pretrain-encoder` writes one for "
        f"student.encoder), or --encoder-weights imagenet or none (from scratch)"
    )
    state = safe_load(path, "encoder weights", fix)
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[-1].strip()[:120]
        raise StudentError(f"{path} does not fit the {name} encoder ({first}); {fix}") from None
