"""An exported student (onnxruntime) in every eval mode: the same whole / slide / flip inference as the torch
student's (eval.inference.predict_logits), with the graph as the scoring function."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from c2s_pipeline.eval.inference import predict_logits, slide_stride

# (B, 3, h, w) RGB 0..255 -> (B, C, h, w) class probabilities: the exported graph with its text input bound
GraphFn = Callable[[np.ndarray], np.ndarray]


def deployed_scores(run_graph: GraphFn, image: np.ndarray, meta: dict) -> np.ndarray:
    """(C, H, W) class probabilities of one (H, W, 3) RGB image under the eval settings the graph was exported
    with (metadata `eval`: mode, stride, flip; a graph without them is whole-image). Each window's scores are
    calibrated (softmax, in the graph) before windows and flips are merged, as `c2s evaluate` merges them."""
    e = meta.get("eval", {"mode": "whole", "stride": 0, "flip": False})
    crop = int(meta["image_size"])

    def scores(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_graph(np.ascontiguousarray(t.numpy(), dtype=np.float32)))

    # the raw image is resized before the graph normalises it: the same as after, both linear per channel
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
    stride = slide_stride(int(e["stride"]), crop)
    return predict_logits(scores, x, mode=e["mode"], crop=crop, stride=stride, flip=e["flip"])[0].numpy()
