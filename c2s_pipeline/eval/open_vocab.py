"""What `c2s predict` and `c2s serve` share: images from users, a class map over any vocabulary, and CLIP's
text tower for names the student was not trained with."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from c2s_pipeline.config import EvalConfig, Params, PredictConfig
from c2s_pipeline.data.images import ImageError, decode
from c2s_pipeline.data.prompts import as_json
from c2s_pipeline.data.registry import dataset_spec
from c2s_pipeline.eval.inference import predict_logits, slide_stride
from c2s_pipeline.student.data import image_to_tensor


class PredictError(RuntimeError):
    """Bad input to predict, vocab or serve; one line that says what to do."""


def text_encoder(params: Params):
    """CLIP (of params' teacher) and the prompts of the dataset the student was trained on, so new names sit
    where its classes did (for `c2s vocab` and `c2s serve`)."""
    from c2s_pipeline.teacher.clip import load_clip  # CLIP stays out of every other command

    t, d = params.teacher, params.data
    templates = (
        dataset_spec(d.dataset, d.root, d.context_unseen_split, d.unseen).prompt_set(t.templates)
        if t.templates == "auto"
        else t.templates
    )
    clip = load_clip(t.clip_model, t.pretrained, image_size=d.image_size, device="cpu", dense_mode=t.dense_mode)
    return clip, templates


# Bounds on what one image may cost, whatever its size (docs/reliability.md): the input the student's geometry
# is cut from, and the (C, H, W) float scores the class map is taken from. Below them the class map is exactly
# the argmax of scores at the image's resolution; above, scores are taken at a size within the bound and the
# class map is upsampled (nearest).
MAX_INPUT_PIXELS = 16_000_000
MAX_SCORE_VALUES = 2**26  # 256 MB of float32 scores: 20 classes at 3.4 MP, 171 at 0.4 MP


def within(height: int, width: int, budget: float) -> tuple[int, int]:
    """(h, w) with h * w <= budget, the ratio kept (the size itself when it fits)."""
    scale = min(1.0, math.sqrt(budget / (height * width)))
    return max(1, int(height * scale)), max(1, int(width * scale))


UNLABELLED = -1  # a pixel no typed name fits (PredictConfig.unlabelled): drawn without colour
MAX_CLASSES = 2**15 - 1  # class maps are int16


def class_scores(student, emb: torch.Tensor, run_params: Params, ev: EvalConfig, image: np.ndarray) -> torch.Tensor:
    """(C, h, w) class probabilities (softmax over the rows of emb (C, D)) with the eval settings ev (whole |
    slide, flip), at the image's size when C * H * W <= MAX_SCORE_VALUES, else at a smaller size of its ratio
    (`within`); the input is first shrunk to MAX_INPUT_PIXELS. Softmax before windows and flips merge, as
    evaluation calibrates, and as the exported graph computes."""
    height, width = image.shape[:2]
    if height * width > MAX_INPUT_PIXELS:
        h, w = within(height, width, MAX_INPUT_PIXELS)
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    size = run_params.data.image_size
    x = image_to_tensor(image, run_params.student.normalisation).unsqueeze(0).to(emb.device)
    probs = lambda t: student.predict_logits(t, emb, run_params.student.logit_scale).softmax(1)  # noqa: E731
    with torch.inference_mode():
        return predict_logits(
            probs,
            x,
            mode=ev.mode,
            crop=size,
            stride=slide_stride(ev.stride, size),
            flip=ev.flip,
            out_size=within(height, width, MAX_SCORE_VALUES / len(emb)),
        )[0]


def label_pixels(scores, n_named: int, threshold: float = 0.0) -> np.ndarray:
    """(H, W) int16 class ids from (C, H, W) scores (torch or numpy): the best row, UNLABELLED where it is one of
    the rows after the n_named typed ones (background prompts) or where its score is below threshold. With
    n_named = C and threshold 0, every pixel gets a name (the benchmarks' protocol)."""
    scores = torch.as_tensor(scores)
    if not 0 < len(scores) <= MAX_CLASSES:
        raise PredictError(f"a vocabulary of {len(scores)} names; c2s predicts over 1 to {MAX_CLASSES}")
    best, pred = scores.max(0)
    pred = pred.to(torch.int16)
    pred[(pred >= n_named) | (best < threshold)] = UNLABELLED
    return pred.cpu().numpy()


def resize_nearest(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """pred (h, w, ...) at (height, width), each pixel taking its nearest source pixel."""
    h, w = pred.shape[:2]
    if (h, w) == (height, width):
        return pred
    rows, cols = np.arange(height) * h // height, np.arange(width) * w // width
    return pred[rows[:, None], cols[None, :]]


def split_background(names: list[str], cfg: PredictConfig) -> tuple[list[int], int]:
    """(row order, n_named) for label_pixels: with cfg.unlabelled background, the vocabulary's background names
    (cfg.background) move after the typed ones, and their pixels will be unlabelled; else every row is named."""
    if not names:
        raise PredictError('the vocabulary has no names; give at least one, e.g. --classes "cat,dog"')
    if cfg.unlabelled != "background":
        return list(range(len(names))), len(names)
    named = [i for i, n in enumerate(names) if n not in cfg.background]
    background = [i for i, n in enumerate(names) if n in cfg.background]
    if not background:
        listed = ",".join([*names, *cfg.background])
        raise PredictError(
            f"predict.unlabelled background needs a text embedding of {', '.join(cfg.background)}; "
            f'build a vocabulary with them: c2s vocab "{listed}" -o vocab.pt, and pass --vocab '
            "vocab.pt (or choose predict.unlabelled none or threshold)"
        )
    if not named:
        raise PredictError("every name of the vocabulary is a background name (predict.background); type a class")
    return named + background, len(named)


def clean_names(names) -> list[str]:
    """Names stripped, empty ones and repeats dropped, in the order given (a repeated name would split its
    class's probability between two rows)."""
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


def with_background(typed: list[str], cfg: PredictConfig) -> list[str]:
    """The names to embed: the typed ones, then cfg.background's when their pixels are to be left unlabelled."""
    if cfg.unlabelled != "background":
        return typed
    return [*typed, *(b for b in cfg.background if b not in typed)]


def prepare(names: list[str], cfg: PredictConfig) -> tuple[list[int], int, float]:
    """(row order, n_named, threshold) for label_pixels of a vocabulary under cfg: the typed names are
    names[order[:n_named]], the rows of scores follow `order`."""
    order, n_named = split_background(names, cfg)
    return order, n_named, cfg.threshold if cfg.unlabelled == "threshold" else 0.0


def class_map(
    student,
    emb: torch.Tensor,
    run_params: Params,
    ev: EvalConfig,
    image: np.ndarray,
    *,
    n_named: int | None = None,
    threshold: float = 0.0,
) -> np.ndarray:
    """(H, W) int16 class ids over the vocabulary emb (C, D), UNLABELLED as label_pixels says (n_named None:
    every row is a typed name); memory bounded as class_scores."""
    scores = class_scores(student, emb, run_params, ev, image)
    pred = label_pixels(scores, len(emb) if n_named is None else n_named, threshold)
    return resize_nearest(pred, *image.shape[:2])


def read_image(path, name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a user's image (data.images rules: dataset formats, a pixel cap); PredictError
    naming the file as `name` (default: its path)."""
    try:
        return np.asarray(decode(path, "RGB", name))
    except ImageError as err:
        raise PredictError(str(err)) from None


def write_vocab(params: Params, class_names: list[str], out: str | Path) -> Path:
    """Text embeddings of new class names, saved for `predict --vocab` and `export --vocab`."""
    names = [c.strip() for c in class_names if c.strip()]
    if not names:
        raise PredictError('no class names given; pass e.g. "cat,dog,grass"')
    clip, templates = text_encoder(params)
    text = clip.encode_text(names, templates=templates).cpu().float()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "class_names": names,
            "text_embeddings": text,
            "clip_model": params.teacher.clip_model,
            "weights_digest": clip.weights_digest,
            "templates": as_json(templates),
        },
        out,
    )
    return out
