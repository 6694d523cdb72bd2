"""What `c2s predict` and `c2s serve` share: images from users, a class map over any vocabulary, and CLIP's
text tower for names the student was not trained with."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from c2s_pipeline.config import EvalConfig, Params
from c2s_pipeline.data.images import ImageError, decode
from c2s_pipeline.data.registry import dataset_spec
from c2s_pipeline.eval.inference import segment, slide_stride
from c2s_pipeline.student.data import image_to_tensor


class PredictError(RuntimeError):
    """Bad input to predict, vocab or serve; one line that says what to do."""


def text_encoder(params: Params):
    """CLIP (of params' teacher) and the prompts of the dataset the student was trained on, so new names sit
    where its classes did (for `c2s vocab` and `c2s serve`)."""
    from c2s_pipeline.teacher.clip import load_clip  # CLIP stays out of every other command

    t, d = params.teacher, params.data
    templates = dataset_spec(d.dataset, d.root, d.context_unseen_split).prompt_set(t.templates) \
        if t.templates == "auto" else t.templates
    clip = load_clip(t.clip_model, t.pretrained, image_size=d.image_size, device="cpu", dense_mode=t.dense_mode)
    return clip, templates


# Bounds on what one image may cost, whatever its size (docs/reliability.md): the input the student's geometry
# is cut from, and the (C, H, W) float scores the class map is taken from. Below them the class map is exactly
# the argmax of scores at the image's resolution; above, scores are taken at a size within the bound and the
# class map is upsampled (nearest).
MAX_INPUT_PIXELS = 16_000_000
MAX_SCORE_VALUES = 2 ** 26          # 256 MB of float32 scores: 20 classes at 3.4 MP, 171 at 0.4 MP


def within(height: int, width: int, budget: float) -> tuple[int, int]:
    """(h, w) with h * w <= budget, the ratio kept (the size itself when it fits)."""
    scale = min(1.0, math.sqrt(budget / (height * width)))
    return max(1, int(height * scale)), max(1, int(width * scale))


def class_map(student, emb: torch.Tensor, run_params: Params, ev: EvalConfig, image: np.ndarray) -> np.ndarray:
    """(H, W) int16 class ids over the vocabulary emb (C, D), with the eval settings ev (whole | slide, flip);
    memory bounded by MAX_INPUT_PIXELS and MAX_SCORE_VALUES."""
    height, width = image.shape[:2]
    if height * width > MAX_INPUT_PIXELS:
        h, w = within(height, width, MAX_INPUT_PIXELS)
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    size = run_params.data.image_size
    no_bias = torch.zeros(len(emb), dtype=torch.bool)  # calibration needs a seen split; none here
    x = image_to_tensor(image, run_params.student.normalisation).unsqueeze(0).to(emb.device)
    out = within(height, width, MAX_SCORE_VALUES / len(emb))
    with torch.inference_mode():
        pred = segment(lambda t: student.predict_logits(t, emb, run_params.student.logit_scale), x, no_bias, 0.0,
                       mode=ev.mode, crop=size, stride=slide_stride(ev.stride, size), flip=ev.flip, out_size=out)
    pred = pred.cpu().numpy().astype(np.int16)
    if out == (height, width):
        return pred
    rows = (np.arange(height) * out[0]) // height              # nearest source row / column of every pixel
    cols = (np.arange(width) * out[1]) // width
    return pred[rows[:, None], cols[None, :]]


def read_image(path, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a user's image (data.images rules: dataset formats, a pixel cap); PredictError
    naming the file as `name` (default: its path)."""
    try:
        return np.asarray(decode(path, "RGB", name))
    except ImageError as err:
        raise PredictError(str(err)) from None
