"""What `c2s predict` and `c2s serve` share: images from users, a class map over any vocabulary, and CLIP's
text tower for names the student was not trained with."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from c2s_pipeline.config import EvalConfig, Params
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


def class_map(student, emb: torch.Tensor, run_params: Params, ev: EvalConfig, image: np.ndarray) -> np.ndarray:
    """(H, W) class ids over the vocabulary emb (C, D), with the eval settings ev (whole | slide, flip)."""
    size = run_params.data.image_size
    no_bias = torch.zeros(len(emb), dtype=torch.bool)  # calibration needs a seen split; none here
    x = image_to_tensor(image, run_params.student.normalisation).unsqueeze(0).to(emb.device)
    with torch.inference_mode():
        pred = segment(lambda t: student.predict_logits(t, emb, run_params.student.logit_scale), x, no_bias, 0.0,
                       mode=ev.mode, crop=size, stride=slide_stride(ev.stride, size), flip=ev.flip)
    return pred.cpu().numpy()


def read_image(path) -> np.ndarray:
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise PredictError(f"cannot read image {path}: {err.__class__.__name__}; pass a readable JPEG/PNG") from None
