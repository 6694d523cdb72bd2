"""The evaluation loop: one confusion matrix over a dataset, whatever predicts each image's class map.

A predictor maps a sample (and its index) to (H, W) class ids at label resolution; the student's and the
teacher's dense map are the two kinds, and every evaluation (c2s evaluate, the CLIP baseline, cross-dataset,
the closed-set benchmark, the world's diagnostics) is this loop with one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from c2s_pipeline.config import EvalConfig, Params
from c2s_pipeline.data.base import Sample
from c2s_pipeline.eval.inference import LogitsFn, apply_seen_bias, dense_text_logits, segment, slide_stride
from c2s_pipeline.eval.metrics import ConfusionMatrix
from c2s_pipeline.student.data import image_to_tensor

Predictor = Callable[[Sample, int], torch.Tensor]  # (sample, index) -> (H, W) class ids


def confusion_matrix(
    dataset, predict: Predictor, *, device: torch.device | str = "cpu", desc: str = "evaluate"
) -> ConfusionMatrix:
    """The confusion matrix of `predict` over every image of dataset, at full label resolution."""
    cm = ConfusionMatrix(dataset.spec.num_classes, device=device)
    with torch.inference_mode():
        for i in tqdm(range(len(dataset)), desc=desc, unit="img"):
            sample = dataset[i]
            cm.update(predict(sample, i), torch.from_numpy(sample.label).long().to(device))
    return cm


def student_predictor(
    logits_fn: LogitsFn,
    run_params: Params,
    e: EvalConfig,
    seen_mask: np.ndarray,
    bias: float,
    device: torch.device | str,
) -> Predictor:
    """A student's class map under the eval settings e (mode, stride, flip, calibration), `bias` subtracted from
    the classes of seen_mask after calibration; the image normalised and cut as the run was trained."""
    size, seen = run_params.data.image_size, torch.from_numpy(seen_mask)

    def predict(sample: Sample, _: int) -> torch.Tensor:
        x = image_to_tensor(sample.image, run_params.student.normalisation)[None].to(device)  # (1, 3, H, W)
        return segment(
            logits_fn,
            x,
            seen,
            bias,
            e.calibration,
            mode=e.mode,
            crop=size,
            stride=slide_stride(e.stride, size),
            flip=e.flip,
        )

    return predict


def dense_map_predictor(
    tokens_of: Callable[[Sample, int], torch.Tensor], text: torch.Tensor, seen_mask: np.ndarray, bias: float
) -> Predictor:
    """The teacher's own dense zero-shot map: its (h, w, D) tokens of an image (stored or computed) against the
    (C, D) text embeddings, upsampled to the label, softmax minus `bias` on the classes of seen_mask."""
    seen = torch.from_numpy(seen_mask)

    def predict(sample: Sample, i: int) -> torch.Tensor:
        logits = dense_text_logits(tokens_of(sample, i), text, sample.label.shape)
        return apply_seen_bias(logits, seen, bias)[0].argmax(0)

    return predict
