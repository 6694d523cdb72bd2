"""The student as one ONNX graph: image in, calibrated per-class scores out, no CLIP and no torch at run time.

Two modes. Open vocabulary: the text-embedding matrix is a second input (any number of classes), so any
vocabulary from `c2s vocab` works without re-export. Folded: one vocabulary is a constant of the graph
(the fast path). Either graph does what `c2s predict` does in whole-image mode: the student's normalisation, resize
to the training size, class logits, softmax (predict calibrates without a seen split), upsampling back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from c2s_pipeline.data.transforms import NORMALISATIONS
from c2s_pipeline.student.model import Student

IMAGE, TEXT, SCORES = "image", "text", "scores"
METADATA_KEY = "c2s"  # ONNX metadata_props entry: JSON with class names, size, logit scale, mode


class ExportError(RuntimeError):
    """An export that cannot be made; what to do."""


class DeployedStudent(nn.Module):
    """(B, 3, H, W) float RGB in 0..255 [, (C, D) text] -> (B, C, H, W) class scores (softmax over C)."""

    def __init__(
        self,
        student: Student,
        logit_scale: float,
        size: int,
        text: torch.Tensor | None = None,
        normalisation: str = "clip",
    ):
        super().__init__()
        self.student, self.logit_scale, self.size = student.with_fixed_head(), float(logit_scale), int(size)
        mean, std = NORMALISATIONS[normalisation]  # the student's own input normalisation (student.normalisation)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        self.folded = text is not None
        if text is not None:
            self.register_buffer("text", F.normalize(text.float(), dim=-1))

    mean: torch.Tensor  # buffers (register_buffer), declared for the type checker
    std: torch.Tensor
    text: torch.Tensor

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        text = self.text if self.folded else text
        assert text is not None, "an open-vocabulary graph takes the text embeddings as its second input"
        h, w = image.shape[-2:]
        x = (image - self.mean) / self.std
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        logits = self.student.predict_logits(x, text, self.logit_scale)  # (B, C, S, S)
        # calibrated at the size the student saw, then resized: the order of c2s predict (eval.inference.segment)
        # the same scores either way: each runtime gets its faster form (softmax_over_classes)
        scores = softmax_over_classes(logits) if torch.compiler.is_exporting() else logits.softmax(1)
        return F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)


def softmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    """softmax over dim 1 of (B, C, H, W), written out, for the exported graph: onnxruntime's Softmax on a
    non-last axis took 45 % of the exported student's time at 512 px, its reductions over dim 1 do not; torch
    is the other way round (docs/decisions/0054-onnx-faster-than-torch.md)."""
    shifted = logits - logits.amax(1, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(1, keepdim=True)


def export_onnx(
    model: DeployedStudent,
    out: str | Path,
    class_names: list[str],
    embed_dim: int,
    text: torch.Tensor | None = None,
    eval_mode: dict | None = None,
) -> Path:
    """Write `model` as ONNX with dynamic batch, height, width (and classes, unfolded); checks the graph.

    `text` (C, D): the training vocabulary, stored in the metadata so the open-vocabulary graph has a
    default vocabulary; the folded graph stores its class names only. `eval_mode` ({mode, stride, flip}) is how
    the graph is to be run (eval.deployed: slide windows and flips around it); none: whole images.
    """
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the deploy extra: pip install 'c2s[deploy]'") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    size = model.size
    # Batch 2 and a non-square image as the example: torch.export would fix a dimension of size 1.
    image = torch.zeros(2, 3, size, size + 32)
    dims = {
        0: torch.export.Dim("batch"),
        2: torch.export.Dim("height", min=8, max=8192),
        3: torch.export.Dim("width", min=8, max=8192),
    }
    if model.folded:
        args: tuple[torch.Tensor, ...] = (image,)
        shapes: dict = {"image": dims}
        names = [IMAGE]
    else:
        example_text = torch.zeros(3, embed_dim)
        args, shapes, names = (
            (image, example_text),
            {"image": dims, "text": {0: torch.export.Dim("classes")}},
            [IMAGE, TEXT],
        )
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(out),
            dynamo=True,
            input_names=names,
            output_names=[SCORES],
            dynamic_shapes=shapes,
            external_data=False,
        )
    graph = onnx.load(str(out))
    meta = {
        "class_names": list(class_names),
        "image_size": size,
        "logit_scale": model.logit_scale,
        "mode": "folded" if model.folded else "open-vocabulary",
        "input": "RGB float 0..255, (B, 3, H, W)",
        "eval": eval_mode or {"mode": "whole", "stride": 0, "flip": False},
    }
    if text is not None and not model.folded:
        meta["text_embeddings"] = text.float().tolist()
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out
