"""Stage `serve`: a local page where a person uploads an image, types class names and sees the segmentation.

The overlay is the one `c2s predict` draws (same class map, same legend). Names of the training vocabulary use
the run's stored text embeddings; any other name is embedded once by the teacher's CLIP text tower, loaded
on first need, and cached for the life of the server.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from c2s_pipeline.config import Params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.eval.open_vocab import PredictError, class_map, read_image, text_encoder
from c2s_pipeline.eval.report import overlay_image
from c2s_pipeline.student.checkpoint import load_student
from stages.common import resolve_device

log = logging.getLogger(__name__)
SHARE_HEADERS = ["class", "share of the image (%)"]


def parse_vocabulary(text: str | None) -> list[str]:
    """Comma-separated names, stripped, empty ones and repeats dropped, in the order typed."""
    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if not names:
        raise PredictError('type at least one class name, e.g. "cat, dog, grass"')
    return names


def class_shares(pred: np.ndarray, names: list[str]) -> list[list]:
    """[name, percent of pixels] of every class present, largest first."""
    counts = np.bincount(pred.ravel(), minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return [[names[c], round(100.0 * counts[c] / pred.size, 2)] for c in order if counts[c]]


class Segmenter:
    """The student of a run and a per-name cache of text embeddings."""

    def __init__(self, params: Params, run_dir: str | Path):
        self.device = resolve_device(params.eval.device)
        self.student, text, self.run = load_student(run_dir, self.device)
        self.eval = params.eval
        self.class_names = list(self.run.provenance["class_names"])
        self.embeddings = dict(zip(self.class_names, text))
        self._clip = None
        self.clip_loads = 0

    def vocabulary(self, text: str | None) -> tuple[list[str], torch.Tensor]:
        names = parse_vocabulary(text)
        new = [n for n in names if n not in self.embeddings]
        if new:
            self.embeddings.update(zip(new, self._encode(new)))
        return names, torch.stack([self.embeddings[n] for n in names]).to(self.device)

    def _encode(self, names: list[str]) -> torch.Tensor:
        if self._clip is None:
            try:
                self._clip = text_encoder(self.run.params)
            except Exception as err:  # noqa: BLE001 - any failure to load CLIP means the same thing to the user
                raise PredictError(f"cannot embed {', '.join(names)}: the teacher's CLIP did not load "
                                   f"({err.__class__.__name__}); use names of the training vocabulary, or serve "
                                   "from the project folder the run was trained in") from None
            self.clip_loads += 1
        clip, templates = self._clip
        emb = clip.encode_text(names, templates=templates).cpu().float()
        log.info("embedded %d new class names: %s", len(names), ", ".join(names))
        return emb.to(self.device)

    def segment(self, image_path: str | None, vocabulary: str | None):
        """(overlay image with legend, [[class, share %]]) of one uploaded image."""
        if not image_path:
            raise PredictError("upload an image first (JPEG or PNG)")
        try:
            image = read_image(image_path)
        except PredictError:
            raise PredictError(f"{Path(image_path).name} is not an image this page can read; "
                               "upload a JPEG or PNG") from None
        names, emb = self.vocabulary(vocabulary)
        pred = class_map(self.student, emb, self.run.params, self.eval, image)
        return overlay_image(image, pred, names), class_shares(pred, names)


def example_images(params: Params, n: int) -> list[str]:
    """Up to n images of the validation split of the run's dataset, when it is on disk."""
    try:
        dataset = dataset_from_params(params, params.data.val_split)
        return [str(dataset.image_path(i)) for i in range(min(n, len(dataset)))]
    except Exception as err:  # noqa: BLE001 - examples are a convenience; the page works without them
        log.warning("no example images (%s); serve from the folder the run was trained in to get them", err)
        return []


def build_app(segmenter: Segmenter, examples: list[str]):
    import gradio as gr

    def on_segment(image_path, vocabulary):
        try:
            overlay, shares = segmenter.segment(image_path, vocabulary)
        except PredictError as err:
            return None, None, f"**{err}**"
        except Exception as err:  # noqa: BLE001 - a person at the page gets one line; the log keeps the trace
            log.exception("segmenting %s failed", image_path)
            return None, None, f"**could not segment this image ({err.__class__.__name__}); see the server's log**"
        return overlay, shares, ""

    default_vocab = ", ".join(segmenter.class_names)
    with gr.Blocks(title="c2s: open-vocabulary segmentation", analytics_enabled=False) as app:
        gr.Markdown("## c2s student\nUpload an image, type class names separated by commas, press Segment.")
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: the student must see the uploaded bytes as `c2s predict` reads them,
                # not an image gradio has decoded and re-encoded.
                image = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="c2s-image")
                vocab = gr.Textbox(label="Class names", value=default_vocab, lines=2, elem_id="c2s-vocab")
                button = gr.Button("Segment", variant="primary", elem_id="c2s-segment")
                if examples:
                    gr.Examples([[p, default_vocab] for p in examples], inputs=[image, vocab])
            with gr.Column():
                status = gr.Markdown(elem_id="c2s-status")
                overlay = gr.Image(label="Overlay", type="pil", format="png", interactive=False,
                                   elem_id="c2s-overlay")
                shares = gr.Dataframe(headers=SHARE_HEADERS, label="Classes in the image", interactive=False,
                                      elem_id="c2s-shares")
        button.click(on_segment, [image, vocab], [overlay, shares, status], show_progress_on=overlay)
    return app


def run(params: Params, run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 7860,
        examples: int = 3) -> None:
    """Serve the page until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise PredictError("serve needs the serve extra: pip install 'c2s[serve]'") from None
    segmenter = Segmenter(params, run_dir)
    app = build_app(segmenter, example_images(segmenter.run.params, examples))
    app.queue().launch(server_name=host, server_port=port, show_error=False, quiet=True)
