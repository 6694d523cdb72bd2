"""FPS of the C2S student vs the same smp model with a plain N-class head vs CLIP's own dense inference.

    python -m benchmarks.inference                       # ViT-B/16 + Segformer-B0 at 512, 20 classes
    python -m benchmarks.inference --clip c2s-world-vit --size 128 --embed-dim 128

Batch 1, no autograd, warm-up, then timed iterations (Cascade-CLIP's protocol, fewer on CPU), the
models alternating call by call so that load drift hits all alike; FPS = 1 / median time. Random
weights: speed does not depend on them. Targets: C2S / plain >= 0.97, C2S / CLIP >= 3. Both student
heads are timed: linear (the paper's; its feature norm costs K^2 per pixel) and isometric
(student.head; K per pixel).

Class maps, for each --classes count: the plain head and the linear head's `predict_labels` (exactly the
argmax of its upsampled cosine logits) through the same class-map step (`upsampled_argmax`: resize and argmax
channels-last), beside the plain head as smp ships it and the channels-first argmax of `predict_logits`:

    python -m benchmarks.inference --size 512 --classes 20 171 --no-clip
"""

from __future__ import annotations

import argparse

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.runtime import keep_large_blocks_in_process
from c2s_pipeline.student.model import Student, StudentError, class_logits, upsampled_argmax
from c2s_pipeline.teacher.clip import load_clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--classes", type=int, nargs="+", default=[20, 171], help="the first: the logits table")
    ap.add_argument("--no-clip", action="store_true", help="skip the logits table (CLIP's dense map included)")
    ap.add_argument("--arch", default="segformer")
    ap.add_argument("--encoder", default="mit_b0")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    keep_large_blocks_in_process()  # as the c2s CLI does
    if not args.no_clip:
        logits_table(args)
    class_maps(args)


def logits_table(args: argparse.Namespace) -> None:
    dev, x = args.device, torch.randn(1, 3, args.size, args.size, device=args.device)
    text = F.normalize(torch.randn(args.classes[0], args.embed_dim, device=dev), dim=-1)
    student = Student(args.arch, args.encoder, None, args.embed_dim).to(dev).eval()
    try:
        isometric = Student(args.arch, args.encoder, None, args.embed_dim, head="isometric").to(dev).eval()
    except StudentError as err:  # K > D, or a head that is no 1x1 conv
        isometric = None
        print(f"isometric head skipped: {err}")
    plain = (
        smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=args.classes[0])
        .to(dev)
        .eval()
    )
    clip = load_clip(args.clip, None, image_size=args.size, device=dev)

    def clip_dense(inp):
        tokens = clip.encode_images(inp).dense_tokens  # (1, h, w, D)
        logits = torch.einsum("bhwd,cd->bchw", tokens, text[:, : tokens.shape[-1]])
        return F.interpolate(logits, size=inp.shape[-2:], mode="bilinear", align_corners=False)

    def c2s_unfolded(inp):  # the D-channel map, then the cosine: what folding the head avoids
        logits = class_logits(student(inp), text, 50.0)
        return F.interpolate(logits, size=inp.shape[-2:], mode="bilinear", align_corners=False)

    models = {
        "c2s_student": lambda t: student.predict_logits(t, text, 50.0),
        "c2s_unfolded": c2s_unfolded,
        "plain_smp": plain,
        "clip_dense": clip_dense,
    }
    if isometric is not None:
        models["c2s_isometric"] = lambda t: isometric.predict_logits(t, text, 50.0)
    with torch.inference_mode():
        seconds = interleaved_median_seconds(
            {name: (lambda f=f: f(x)) for name, f in models.items()}, args.iters, warmup=args.warmup, device=dev
        )
    fps = {name: 1.0 / s for name, s in seconds.items()}
    print(f"{args.arch}/{args.encoder} vs {args.clip} at {args.size}px on {dev}, batch 1, {args.iters} iters")
    for name, value in fps.items():
        print(f"  {name:12s} {value:8.2f} FPS")
    print(f"  c2s / plain = {fps['c2s_student'] / fps['plain_smp']:.3f}  (target >= 0.97; linear head)")
    if isometric is not None:
        print(f"  isometric / plain = {fps['c2s_isometric'] / fps['plain_smp']:.3f}  (target >= 0.97)")
    print(f"  c2s / clip  = {fps['c2s_student'] / fps['clip_dense']:.2f}  (target >= 3)")
    print(f"  unfolded head / plain = {fps['c2s_unfolded'] / fps['plain_smp']:.3f}")


def class_maps(args: argparse.Namespace) -> None:
    """Class maps per --classes count: the plain head and the linear head's predict_labels through the same
    class-map step, beside the plain head as smp ships it and C2S's channels-first argmax of predict_logits."""
    dev = args.device
    x = torch.randn(1, 3, args.size, args.size, device=dev)
    student = Student(args.arch, args.encoder, None, args.embed_dim).to(dev).eval()
    print(f"class maps: {args.arch}/{args.encoder} at {args.size}px on {dev}, batch 1, {args.iters} iters")
    for n_classes in args.classes:
        text = F.normalize(torch.randn(n_classes, args.embed_dim, device=dev), dim=-1)
        plain = (
            smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=n_classes)
            .to(dev)
            .eval()
        )
        fps = {name: 1.0 / s for name, s in time_class_maps(student, plain, x, text, args).items()}
        print(
            f"  {n_classes:3d} classes, FPS: " + ", ".join(f"{name} {value:.2f}" for name, value in fps.items()) + "\n"
            f"       c2s labels / plain = {fps['c2s_labels'] / fps['plain']:.3f} (target >= 0.97; the same class "
            f"map as predict_logits' argmax); plain / plain as shipped = {fps['plain'] / fps['plain_as_shipped']:.3f}"
            f" and c2s labels / c2s channels-first = {fps['c2s_labels'] / fps['c2s_channels_first']:.3f} (what "
            "the channels-last class-map step gives any head)"
        )


def time_class_maps(student: Student, plain, x: torch.Tensor, text: torch.Tensor, args) -> dict[str, float]:
    """Median seconds per class map of each contender; the two C2S maps are checked equal first."""
    with torch.inference_mode():
        if not torch.equal(student.predict_labels(x, text, 50.0), student.predict_logits(x, text, 50.0).argmax(1)):
            raise SystemExit("predict_labels differs from the argmax of predict_logits")

        def plain_labels():  # the plain head's logits at its stride, then the same class-map step
            return upsampled_argmax(plain.segmentation_head[0](plain.decoder(plain.encoder(x))), x.shape[-2:])

        fns = {
            "plain_as_shipped": lambda: plain(x).argmax(1),
            "plain": plain_labels,
            "c2s_labels": lambda: student.predict_labels(x, text, 50.0),
            "c2s_channels_first": lambda: student.predict_logits(x, text, 50.0).argmax(1),
        }
        return interleaved_median_seconds(fns, args.iters, warmup=args.warmup, device=args.device)


if __name__ == "__main__":
    main()
