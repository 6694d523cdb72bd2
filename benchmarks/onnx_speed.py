"""FPS of the exported student under onnxruntime (CPU) vs the same student in torch eager, side by side.

    python -m benchmarks.onnx_speed                          # Segformer-B0, D = 512, 20 classes, 512 and 128 px
    python -m benchmarks.onnx_speed --sizes 512 --iters 30

Both run `DeployedStudent` (normalise, resize, class scores, upsample, softmax), the graph `c2s export`
writes, on one image per call; onnxruntime gets as many intra-op threads as torch. The contenders
alternate call by call; FPS = 1 / median time. Random weights: speed does not depend on them.
Then, at the first size, a 375 x 500 image in slide and slide + flip mode (--slide H W; 0 0 skips): the graph
through eval.deployed vs the torch student through eval.inference (window by
window), as `c2s predict --onnx` and `c2s evaluate` run them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.eval.deployed import deployed_scores
from c2s_pipeline.eval.inference import predict_logits, slide_corners, slide_size, slide_stride
from c2s_pipeline.runtime import keep_large_blocks_in_process
from c2s_pipeline.student.data import image_to_tensor
from c2s_pipeline.student.export import DeployedStudent, export_onnx
from c2s_pipeline.student.model import Student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 128])
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--arch", default="segformer")
    ap.add_argument("--encoder", default="mit_b0")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--slide",
        type=int,
        nargs=2,
        default=[375, 500],
        metavar=("H", "W"),
        help="an image of this size in slide mode (and slide + flip) at the first size; 0 0 skips",
    )
    args = ap.parse_args()
    import onnxruntime as ort

    keep_large_blocks_in_process()  # as the c2s CLI does
    torch.manual_seed(0)
    student = Student(args.arch, args.encoder, None, args.embed_dim).eval()
    text = torch.randn(args.classes, args.embed_dim)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    print(
        f"{args.arch}/{args.encoder}, D = {args.embed_dim}, {args.classes} classes, batch 1, "
        f"{torch.get_num_threads()} threads, onnxruntime {ort.__version__}, {args.iters} iters"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for mode in ("folded", "open"):
                model = DeployedStudent(student, 50.0, size, text=text if mode == "folded" else None).eval()
                path = export_onnx(
                    model, Path(tmp) / f"{mode}{size}.onnx", [f"c{i}" for i in range(args.classes)], args.embed_dim
                )
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                image = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
                feed = {"image": image} if mode == "folded" else {"image": image, "text": text.numpy()}
                x, t = torch.from_numpy(image), (None if mode == "folded" else text)
                contenders = {
                    "torch": lambda: model(x, t),  # noqa: B023 - timed before the loop moves on
                    "onnxruntime": lambda: session.run(None, feed),  # noqa: B023 - likewise
                }
                with torch.inference_mode():
                    seconds = interleaved_median_seconds(contenders, args.iters, warmup=args.warmup)
                fps = {k: 1.0 / v for k, v in seconds.items()}
                print(
                    f"  {size:4d}px {mode:6s}  torch {fps['torch']:7.2f} FPS  onnxruntime {fps['onnxruntime']:7.2f} "
                    f"FPS  ort/torch = {fps['onnxruntime'] / fps['torch']:.3f}"
                )

        if args.slide[0]:
            slide_modes(student, text, args, Path(tmp), options)


def slide_modes(student: Student, text: torch.Tensor, args: argparse.Namespace, tmp: Path, options) -> None:
    """The open graph in slide mode (and slide + flip) as `c2s predict --onnx` runs it (eval.deployed)
    vs the torch student as `c2s evaluate` runs it (eval.inference: window by window)."""
    import onnxruntime as ort

    size, (h, w) = args.sizes[0], args.slide
    stride = slide_stride(0, size)
    path = export_onnx(
        DeployedStudent(student, 50.0, size).eval(), tmp / "slide.onnx", ["c"] * len(text), args.embed_dim
    )
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)
    x, feed_text = image_to_tensor(image)[None], text.numpy()
    windows = len(slide_corners(*slide_size(h, w, size), size, stride))
    for flip in (False, True):
        meta = {"image_size": size, "eval": {"mode": "slide", "stride": stride, "flip": flip}}
        contenders = {
            "torch": lambda: predict_logits(  # noqa: B023 - timed before the loop moves on
                lambda t: student.predict_logits(t, text, 50.0).softmax(1),
                x,
                mode="slide",
                crop=size,
                stride=stride,
                flip=flip,  # noqa: B023
            ),
            "onnxruntime": lambda: deployed_scores(  # noqa: B023
                lambda b: session.run(None, {"image": b, "text": feed_text})[0],
                image,
                meta,  # noqa: B023
            ),
        }
        with torch.inference_mode():
            seconds = interleaved_median_seconds(contenders, args.iters, warmup=args.warmup)
        fps = {k: 1.0 / v for k, v in seconds.items()}
        print(
            f"  {h}x{w} slide{' + flip' if flip else ''} ({size}-px windows, {windows} "
            f"of them)  torch {fps['torch']:7.2f} FPS  onnxruntime {fps['onnxruntime']:7.2f} FPS  "
            f"ort/torch = {fps['onnxruntime'] / fps['torch']:.3f}"
        )


if __name__ == "__main__":
    main()
