"""The student: any smp architecture whose head emits D = CLIP-width channels at the decoder's stride.

The classifier is the fixed text-embedding matrix, so inference adds no parameters; the C-class
logits, never the D-channel map, are upsampled to the input size.
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn


class StudentError(ValueError):
    """An architecture or encoder smp does not provide; lists the choices."""


def class_logits(features: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(F, A), the one scaled-cosine classifier: features (B, D, h, w), text (C, D) shared by the
    batch or (B, C, D) per image -> (B, C, h, w)."""
    return scaled_cosine(features, scale * F.normalize(text, dim=-1))


def scaled_cosine(features: torch.Tensor, scaled_unit_text: torch.Tensor) -> torch.Tensor:
    """s_c cos(F, A_c) for text rows of norm s_c: (B, D, h, w), (C, D) or (B, C, D) -> (B, C, h, w).

    (A F) / |F| rather than A (F / |F|): the same numbers, but the D-channel map is never divided and its
    backward is one matmul and one scaling instead of a normalize's passes over B x D x h x w.
    """
    b, _, h, w = features.shape
    flat = features.flatten(2)                                                    # (B, D, hw)
    inv_norm = 1.0 / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)              # (B, 1, hw), as F.normalize
    return ((scaled_unit_text @ flat) * inv_norm).view(b, -1, h, w)


class Student(nn.Module):
    def __init__(self, arch: str = "segformer", encoder: str = "mit_b0", encoder_weights: str | None = None,
                 embed_dim: int = 512):
        super().__init__()
        try:
            self.net = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights,
                                        classes=embed_dim)
        except KeyError as err:
            archs = ", ".join(sorted(getattr(smp, "MODEL_ARCHITECTURES_MAPPING", {}))) or "see smp docs"
            raise StudentError(f"smp has no {err}; architectures: {archs}; "
                               "encoders: smp.encoders.get_encoder_names()") from None
        self.net.segmentation_head[1] = nn.Identity()  # keep D channels at the decoder's own stride
        self.embed_dim = embed_dim

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.net.encoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> dense features (B, D, h, w)."""
        return self.net(x)

    def predict_logits(self, x: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W): class logits at feature stride, then upsampled.

        With a 1x1 head conv the text matrix is folded into it, so the D-channel map is never built:
        the same logits as class_logits(self(x), ...) at about half the head's cost (see _folded_logits).
        """
        conv = self.net.segmentation_head[0]
        if conv.kernel_size == (1, 1) and conv.bias is not None:
            self.net.check_input_shape(x)
            hidden = self.net.decoder(self.net.encoder(x))
            logits = _folded_logits(hidden, conv.weight[:, :, 0, 0], conv.bias, text, scale)
        else:
            logits = class_logits(self(x), text, scale)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _folded_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, text: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """scale * cos(W h + b, t) without forming W h + b: hidden (B, K, h, w), weight (D, K), bias (D,), text (C, D).

    Numerator t.(W h + b) = (t W).h + t.b costs C*K per pixel; the squared norm
    |W h + b|^2 = h.(W^T W) h + 2 (W^T b).h + b.b costs K*K, against D*K for the D-channel map.
    Computed in fp32 so the quadratic form keeps its precision under autocast.
    """
    hidden, weight, bias = hidden.float(), weight.float(), bias.float()
    unit_text = F.normalize(text.float(), dim=-1)                                 # (C, D)
    numerator = torch.einsum("bkhw,ck->bchw", hidden, unit_text @ weight) + (unit_text @ bias)[:, None, None]
    gram_h = torch.einsum("jk,bkhw->bjhw", weight.T @ weight, hidden)               # (B, K, h, w)
    sq_norm = (hidden * gram_h).sum(1) + 2 * torch.einsum("k,bkhw->bhw", weight.T @ bias, hidden) + bias @ bias
    return scale * numerator / sq_norm.clamp_min(0).sqrt().clamp_min(1e-12)[:, None]
