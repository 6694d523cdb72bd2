"""Teacher pretraining step: `train_clip` (AdamW on the caption token rows only) vs AdamW on every row.

    python -m benchmarks.pretrain_step                    # the world's CLIP, batch 20, 30 steps a run

Both train the same freshly initialised open_clip model on the same batches (20 distinct class captions,
random photos at the model's input size) and give the same weights bit for bit (tests/test_world.py);
the runs alternate, and each is timed whole (the optimizer's first step allocates its state), each on a model
built before the timing. `every_row` is also the reference of tests/test_world.py.
"""

from __future__ import annotations

import argparse
import math

import open_clip
import torch

from benchmarks.timing import interleaved_median_seconds
from c2s_pipeline.config import TeacherPretrainConfig
from c2s_pipeline.data.prompts import SINGLE_TEMPLATE
from c2s_pipeline.data.transforms import clip_normalise
from c2s_pipeline.teacher.registry import register_model_configs
from c2s_pipeline.world.generator import CLASS_NAMES
from c2s_pipeline.world.schedule import warmup_cosine_lr
from c2s_pipeline.world.teacher_pretrain import _augment, make_optimizer, train_clip


def every_row(model, images, tokens, batches, cfg: TeacherPretrainConfig, gen, device) -> None:
    """The loop before CaptionTokenRows: AdamW over the whole token table."""
    opt, loss_fn = make_optimizer(model, cfg), open_clip.ClipLoss()
    for step, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, len(batches), cfg.lr, cfg.warmup_steps)
        out = model(clip_normalise(_augment(images[idx], gen).to(device)), tokens[idx].to(device))
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="c2s-world-vit")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    register_model_configs()
    cfg = TeacherPretrainConfig()
    tokens = open_clip.get_tokenizer(args.model)([SINGLE_TEMPLATE[0].format(c) for c in CLASS_NAMES])
    size = open_clip.get_model_config(args.model)["vision_cfg"]["image_size"]
    images = torch.randint(0, 256, (len(tokens), 3, size, size), dtype=torch.uint8)
    batches = [torch.randperm(len(tokens), generator=torch.Generator().manual_seed(i)) for i in range(args.steps)]

    def fresh():
        torch.manual_seed(0)
        return open_clip.create_model(args.model, pretrained=None, output_dict=True).train()

    def run(train):
        models = [fresh() for _ in range(args.repeats + 1)]  # built before the timing (+1: warm-up)

        def once():
            train(models.pop(), images, tokens, batches, cfg, torch.Generator().manual_seed(0), "cpu")

        return once

    secs = interleaved_median_seconds(
        {"caption rows": run(train_clip), "every row": run(every_row)}, repeats=args.repeats
    )
    ours, before = (secs[k] / args.steps * 1e3 for k in ("caption rows", "every row"))
    print(
        f"{args.model}, batch {len(tokens)}, {args.steps} steps a run, median of {args.repeats} runs, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"ms per step: caption rows {ours:.1f}, every row {before:.1f}, ratio {ours / before:.3f}")


if __name__ == "__main__":
    main()
