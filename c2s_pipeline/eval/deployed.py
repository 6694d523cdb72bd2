"""An exported student (onnxruntime) in every eval mode: the graph scores whole images itself; slide windows
and flips are laid around it here, in numpy, as eval.inference lays them around the torch student."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from c2s_pipeline.eval.inference import slide_corners, slide_size

# (B, 3, h, w) RGB 0..255 -> (B, C, h, w) class probabilities: the exported graph with its text input bound
GraphFn = Callable[[np.ndarray], np.ndarray]


def deployed_scores(run_graph: GraphFn, image: np.ndarray, meta: dict) -> np.ndarray:
    """(C, H, W) class probabilities of one (H, W, 3) RGB image under the eval settings the graph was exported
    with (metadata `eval`: mode, stride, flip; a graph without them is whole-image). Each window's scores are
    calibrated (softmax) before windows and flips are merged, as `c2s evaluate` merges them."""
    x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
    height, width = x.shape[1:]
    e = meta.get("eval", {"mode": "whole", "flip": False})
    if e["mode"] == "whole" and not e["flip"]:
        return run_graph(x[None])[0]  # the graph resizes in and out itself
    crop = int(meta["image_size"])
    size = (crop, crop) if e["mode"] == "whole" else slide_size(height, width, crop)
    # resized before the graph normalises: the same as after, both being linear per channel
    x = resize_bilinear(x, size)

    def run(t: np.ndarray) -> np.ndarray:
        return run_graph(t[None])[0] if e["mode"] == "whole" else _slide(run_graph, t, crop, int(e["stride"]))

    scores = run(x)
    if e["flip"]:
        scores = (scores + run(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]) / 2
    return resize_bilinear(scores, (height, width))


def _slide(run_graph: GraphFn, x: np.ndarray, crop: int, stride: int) -> np.ndarray:
    """mmseg-style windows over x (3, H, W), H, W >= crop, scored in one batch; overlaps averaged."""
    _, h, w = x.shape
    corners = slide_corners(h, w, crop, stride)
    out = run_graph(np.stack([x[:, y : y + crop, x0 : x0 + crop] for y, x0 in corners]))  # (N, C, crop, crop)
    total = np.zeros((out.shape[1], h, w), np.float32)
    count = np.zeros((1, h, w), np.float32)
    for (y, x0), window in zip(corners, out):
        total[:, y : y + crop, x0 : x0 + crop] += window
        count[:, y : y + crop, x0 : x0 + crop] += 1
    return total / count


def resize_bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 resized to size as torch's F.interpolate(mode="bilinear", align_corners=False)."""
    (rows0, rows1, wy), (cols0, cols1, wx) = _taps(a.shape[1], size[0]), _taps(a.shape[2], size[1])
    rows = a[:, rows0] * (1 - wy)[None, :, None] + a[:, rows1] * wy[None, :, None]
    return (rows[:, :, cols0] * (1 - wx) + rows[:, :, cols1] * wx).astype(np.float32)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source indices and the weight of the second, per output index (half-pixel centres, clamped)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    first = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    return first, np.minimum(first + 1, n_in - 1), (src - first).astype(np.float32)
