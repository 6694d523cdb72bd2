"""FPS of the exported student under onnxruntime (CPU) vs the same student in torch eager, side by side.

    python -m benchmarks.onnx_speed                          # Segformer-B0, D = 512, 20 classes, 512 and 128 px
    python -m benchmarks.onnx_speed --sizes 512 --iters 30

Both run `DeployedStudent` (normalise, resize, class scores, upsample, softmax), the graph `c2s export`
writes, on one image per call; onnxruntime gets as many intra-op threads as torch. The contenders
alternate call by call; FPS = 1 / median time. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.runtime import keep_large_blocks_in_process
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


if __name__ == "__main__":
    main()
