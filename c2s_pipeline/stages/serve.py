"""Stage `serve`: a local page where a person uploads an image, types class names and sees the segmentation.

The overlay is the one `c2s predict` draws (same class map, same legend). Names of the training vocabulary use
the run's stored text embeddings; any other name is embedded by the teacher's CLIP text tower, loaded on first
need, and kept in a bounded cache. Every request is bounded (image pixels, names, name length, upload size,
queue), so a hostile upload gets a message, not the server's memory (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from c2s_pipeline.config import Params
from c2s_pipeline.data.registry import dataset_from_params
from c2s_pipeline.eval.open_vocab import (
    UNLABELLED,
    PredictError,
    class_map,
    clean_names,
    prepare,
    read_image,
    resize_nearest,
    text_encoder,
    with_background,
    within,
)
from c2s_pipeline.eval.report import overlay_image
from c2s_pipeline.runtime import resolve_device
from c2s_pipeline.student.checkpoint import load_student

log = logging.getLogger(__name__)
SHARE_HEADERS = ["class", "share of the image (%)"]
MAX_NAMES = 256  # per request: COCO-Stuff's 171 classes fit
MAX_NAME_CHARS = 80  # CLIP reads 77 tokens; a longer "name" is a paste, not a class
NAME_CACHE = 4096  # embeddings of names outside the training vocabulary kept, least recently used dropped
ENCODE_BATCH = 64  # new names go through the text tower this many at a time
MAX_FILE_SIZE = "32mb"  # gradio refuses bigger uploads before they reach c2s
QUEUE_SIZE = 32  # requests waiting beyond this are refused by gradio ("queue full")
UPLOAD_CLEANUP = (900, 3600)  # gradio deletes uploads and outputs older than an hour, every 15 minutes
SHOWN_PIXELS = 4_000_000  # the overlay the page shows is at most this big (the class map is not)
DISPLAY_SIDE = 512  # small images are shown enlarged (nearest neighbour) to about this long side
LEGEND_TOP = 44  # the legend starts below gradio's buttons over the image's top right corner
PASSWORD_ENV = "C2S_SERVE_PASSWORD"


def parse_vocabulary(text: str | None) -> list[str]:
    """Comma-separated names, stripped, empty ones and repeats dropped, in the order typed; at most MAX_NAMES
    of at most MAX_NAME_CHARS characters."""
    names = clean_names((text or "").split(","))
    if not names:
        raise PredictError('type at least one class name, e.g. "cat, dog, grass"')
    if len(names) > MAX_NAMES:
        raise PredictError(f"{len(names)} class names given; the page segments with at most {MAX_NAMES} at a time")
    long = next((n for n in names if len(n) > MAX_NAME_CHARS), None)
    if long is not None:
        raise PredictError(
            f'class name "{long[:30]}..." has {len(long)} characters; keep each name under {MAX_NAME_CHARS + 1}'
        )
    return names


UNLABELLED_ROW = "(unlabelled)"


def class_shares(pred: np.ndarray, names: list[str]) -> list[list]:
    """[name, percent of pixels] of every class present, largest first; pixels left UNLABELLED last, as one row."""
    counts = np.bincount(pred[pred != UNLABELLED].ravel().astype(np.int64), minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    rows = [[names[c], round(100.0 * counts[c] / pred.size, 2)] for c in order if counts[c]]
    left = int((pred == UNLABELLED).sum())
    return rows + ([[UNLABELLED_ROW, round(100.0 * left / pred.size, 2)]] if left else [])


class Segmenter:
    """The student of a run and a per-name cache of text embeddings."""

    def __init__(self, params: Params, run_dir: str | Path, *, cache_dir: str | Path, store: str | Path | None = None):
        self.device = resolve_device(params.eval.device)
        self.student, text, self.run = load_student(run_dir, self.device, cache_dir=cache_dir, store=store)
        self.eval, self.predict = params.eval, params.predict
        self.class_names = list(self.run.provenance["class_names"])
        self.trained = dict(zip(self.class_names, text))
        self.cached: OrderedDict[str, torch.Tensor] = OrderedDict()  # other names, least recently used first
        self._clip: tuple[Any, Any] | None = None  # (CLIP, its prompt templates), loaded on the first new name
        self.clip_loads = 0

    def embedding(self, name: str) -> torch.Tensor | None:
        if name in self.trained:
            return self.trained[name]
        if name in self.cached:
            self.cached.move_to_end(name)
            return self.cached[name]
        return None

    def vocabulary(self, text: str | None) -> tuple[list[str], torch.Tensor]:
        names = parse_vocabulary(text)
        return names, self.embed(names)

    def embed(self, names: list[str]) -> torch.Tensor:
        """(len(names), D) text embeddings: the run's for its training vocabulary, cached or new (CLIP) else."""
        new = [n for n in names if self.embedding(n) is None]
        found = {n: e for n in names if (e := self.embedding(n)) is not None}
        for i in range(0, len(new), ENCODE_BATCH):
            found.update(zip(new[i : i + ENCODE_BATCH], self._encode(new[i : i + ENCODE_BATCH])))
        for n in new:
            self.cached[n] = found[n]
        while len(self.cached) > NAME_CACHE:
            self.cached.popitem(last=False)
        return torch.stack([found[n] for n in names]).to(self.device)

    def _encode(self, names: list[str]) -> torch.Tensor:
        if self._clip is None:
            try:
                self._clip = text_encoder(self.run.params)
            except Exception as err:  # noqa: BLE001 - any failure to load CLIP means the same thing to the user
                raise PredictError(
                    f"cannot embed {', '.join(names)}: the teacher's CLIP did not load "
                    f"({err.__class__.__name__}); use names of the training vocabulary, or serve "
                    "from the project folder the run was trained in"
                ) from None
            self.clip_loads += 1
        clip, templates = self._clip
        emb = clip.encode_text(names, templates=templates).cpu().float()
        log.info("embedded %d new class names: %s", len(names), ", ".join(names))
        return emb.to(self.device)

    def segment(self, image_path: str | None, vocabulary: str | None, unlabelled: str | None = None) -> Segmented:
        """The class map of one uploaded image over the typed names; pixels no name fits are left unlabelled as
        `unlabelled` (none | threshold | background; default: the params' predict.unlabelled) says, exactly as
        `c2s predict` leaves them."""
        if not image_path:
            raise PredictError("upload an image first (JPEG or PNG)")
        image = read_image(image_path, name=Path(image_path).name)  # the upload's name, not its temp path
        cfg = dataclasses.replace(self.predict, unlabelled=unlabelled or self.predict.unlabelled)
        names = with_background(parse_vocabulary(vocabulary), cfg)  # the limits apply to the typed names
        emb = self.embed(names)
        order, n_named, threshold = prepare(names, cfg)
        names, emb = [names[i] for i in order[:n_named]], emb[order]
        pred = class_map(self.student, emb, self.run.params, self.eval, image, n_named=n_named, threshold=threshold)
        shares = class_shares(pred, names)  # of the full class map; the page keeps a screen's
        shown, shown_pred = fit_screen(image, pred)
        return Segmented(shown, shown_pred, names, shares)


@dataclasses.dataclass
class Segmented:
    """One segmented upload, as the page keeps it to redraw the overlay at another opacity."""

    image: np.ndarray  # (H, W, 3) uint8, at most SHOWN_PIXELS
    pred: np.ndarray  # (H, W) int16 indices into names, UNLABELLED where no name fits
    names: list[str]
    shares: list[list]


def fit_screen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Arrays of one (H, W) size shrunk (nearest) to at most SHOWN_PIXELS, what a screen shows."""
    height, width = arrays[0].shape[:2]
    if height * width <= SHOWN_PIXELS:
        return arrays
    size = within(height, width, SHOWN_PIXELS)
    return tuple(resize_nearest(a, *size) for a in arrays)


def display_scale(height: int, width: int) -> int:
    """The whole factor a small image is enlarged by on the page (nearest neighbour), so that its long side comes
    near DISPLAY_SIDE; 1 for larger images (the browser fits those)."""
    return max(1, DISPLAY_SIDE // max(height, width))


def enlarge(array: np.ndarray, k: int) -> np.ndarray:
    return array if k == 1 else array.repeat(k, 0).repeat(k, 1)


def views(seg: Segmented, opacity: float) -> tuple[Image.Image, Image.Image]:
    """(the input, the overlay with its legend), both enlarged by display_scale; the overlay's image part is
    `c2s predict`'s overlay of the same image, each pixel repeated k x k."""
    k = display_scale(*seg.pred.shape)
    image = enlarge(seg.image, k)
    return Image.fromarray(image), overlay_image(image, enlarge(seg.pred, k), seg.names, opacity, legend_top=LEGEND_TOP)


def example_images(params: Params, n: int) -> list[str]:
    """Up to n images of the validation split of the run's dataset, when it is on disk."""
    try:
        dataset = dataset_from_params(params, params.data.val_split)
        return [str(dataset.image_path(i)) for i in range(min(n, len(dataset)))]
    except Exception as err:  # noqa: BLE001 - examples are a convenience; the page works without them
        log.warning("no example images (%s); serve from the folder the run was trained in to get them", err)
        return []


UNLABELLED_CHOICES = [
    ("label every pixel", "none"),
    ("leave unsure pixels unlabelled", "threshold"),
    ("leave background unlabelled", "background"),
]


def build_app(segmenter: Segmenter, examples: list[str]):
    import gradio as gr

    def on_upload(image_path):
        """The new input as a picture; the previous overlay and its state go (the slider must not redraw it)."""
        if not image_path:
            return None, None, "", None
        try:
            image = read_image(image_path, name=Path(image_path).name)
        except PredictError as err:
            return None, None, f"**{err}**", None
        (image,) = fit_screen(image)
        return Image.fromarray(enlarge(image, display_scale(*image.shape[:2]))), None, "", None

    def on_segment(image_path, vocabulary, unlabelled, opacity):
        try:
            seg = segmenter.segment(image_path, vocabulary, unlabelled)
        except PredictError as err:
            return gr.skip(), None, None, f"**{err}**", None
        except Exception as err:  # noqa: BLE001 - a person at the page gets one line; the log keeps the trace
            log.exception("segmenting %s failed", image_path)
            return (
                gr.skip(),
                None,
                None,
                f"**could not segment this image ({err.__class__.__name__}); see the server's log**",
                None,
            )
        shown, overlay = views(seg, opacity)
        return shown, overlay, seg.shares, "", seg

    def on_opacity(seg, opacity):
        return views(seg, opacity)[1] if seg is not None else gr.skip()

    default_vocab = ", ".join(segmenter.class_names)
    with gr.Blocks(
        title="c2s: open-vocabulary segmentation", analytics_enabled=False, delete_cache=UPLOAD_CLEANUP
    ) as app:
        gr.Markdown("## c2s student\nUpload an image, type class names separated by commas, press Segment.")
        segmented = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                # A file, not gr.Image: the student must see the uploaded bytes as `c2s predict` reads them,
                # not an image gradio has decoded and re-encoded.
                image = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="c2s-image")
                vocab = gr.Textbox(label="Class names", value=default_vocab, lines=2, elem_id="c2s-vocab")
                unlabelled = gr.Radio(
                    UNLABELLED_CHOICES,
                    value=segmenter.predict.unlabelled,
                    label="Pixels no name fits",
                    elem_id="c2s-unlabelled",
                )
                opacity = gr.Slider(
                    0, 1, value=segmenter.predict.opacity, step=0.05, label="Overlay opacity", elem_id="c2s-opacity"
                )
                button = gr.Button("Segment", variant="primary", elem_id="c2s-segment")
                if examples:
                    gr.Examples([[p, default_vocab] for p in examples], inputs=[image, vocab])
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="c2s-status")
                with gr.Row():
                    shown = gr.Image(label="Input", type="pil", format="png", interactive=False, elem_id="c2s-input")
                    overlay = gr.Image(
                        label="Overlay", type="pil", format="png", interactive=False, elem_id="c2s-overlay"
                    )
                shares = gr.Dataframe(
                    headers=SHARE_HEADERS, label="Classes in the image", interactive=False, elem_id="c2s-shares"
                )
        image.change(on_upload, [image], [shown, overlay, status, segmented])
        button.click(
            on_segment,
            [image, vocab, unlabelled, opacity],
            [shown, overlay, shares, status, segmented],
            show_progress_on=overlay,
        )
        opacity.release(on_opacity, [segmented, opacity], [overlay])
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def password_check(host: str):
    """gradio's auth when $C2S_SERVE_PASSWORD is set (any user name; also on loopback, which a tunnel or proxy
    may expose), else None, with a warning when bound beyond loopback that anyone who reaches it can use it."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        if is_loopback(host):
            return None
        log.warning(
            "serving on %s without authentication: anyone who can reach this address can use the page "
            "and its CPU/GPU; set %s to require a password",
            host,
            PASSWORD_ENV,
        )
        return None
    return lambda _user, given: hmac.compare_digest(given.encode(), password.encode())


def run(
    params: Params,
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    examples: int = 3,
    cache_dir: str | Path,
    store: str | Path | None = None,
) -> None:
    """Serve the page until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise PredictError("serve needs the serve extra: pip install 'c2s[serve]'") from None
    auth = password_check(host)
    segmenter = Segmenter(params, run_dir, cache_dir=cache_dir, store=store)
    app = build_app(segmenter, example_images(segmenter.run.params, examples))
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        show_error=False,
        quiet=True,
        max_file_size=MAX_FILE_SIZE,
        auth=auth,
        auth_message="c2s: the password is the server's $" + PASSWORD_ENV,
    )
