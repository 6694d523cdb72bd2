"""The `c2s` command line: thin typer wrappers that map flags onto params and call one stage each."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from pathlib import Path

import typer

from c2s_pipeline.config import ConfigError, Params, load_params, override
from c2s_pipeline.runtime import keep_large_blocks_in_process
from c2s_pipeline.stages.common import setup_logging

app = typer.Typer(
    help="CLIP-to-Seg distillation: open-vocabulary segmentation from a cached CLIP teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect teacher stores.", no_args_is_help=True)
world_app = typer.Typer(help="The generated vision-language world (the embedded default).", no_args_is_help=True)
datasets_app = typer.Typer(help="The datasets c2s reads; `check` validates a folder of your own.")
app.add_typer(cache_app, name="cache")
app.add_typer(world_app, name="world")
app.add_typer(datasets_app, name="datasets")

ParamsOpt = typer.Option("params.yaml", "--params", help="Params file to read (params.yaml: the defaults).")
CacheDirOpt = typer.Option("data_cache", "--cache-dir", help="Folder of teacher stores.")
# A run's teacher store is looked up by fingerprint in --cache-dir, or named here; never read from the run file.
StoreOpt = typer.Option(None, "--store", help="The run's teacher store (default: found by fingerprint in --cache-dir).")


def _is_ours(err: BaseException) -> bool:
    """User-facing errors are the exception classes this project defines (one-line messages)."""
    return type(err).__module__.split(".")[0] == "c2s_pipeline"


def friendly(fn):
    """Print our own errors as one line and exit 2; anything else keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - re-raised unless it is one of ours
            if isinstance(err, ConfigError) or _is_ours(err):
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
            if isinstance(err, OSError) and err.filename:  # an unwritable, missing or full output place
                logging.getLogger("c2s").debug("%s", err, exc_info=True)
                typer.echo(
                    f"error: cannot use {err.filename} ({err.strerror}); check that its folder exists and "
                    "is writable, and that the disk has space",
                    err=True,
                )
                raise typer.Exit(2) from None
            raise

    return wrapper


def _params(path: str, **sections) -> Params:
    return override(load_params(path), **sections)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    offline: bool = typer.Option(False, "--offline", help="Never contact a model hub (HF_HUB_OFFLINE=1)."),
):
    setup_logging(verbose)
    keep_large_blocks_in_process()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


@datasets_app.callback(invoke_without_command=True)
@friendly
def datasets(ctx: typer.Context):
    """List the supported datasets with class counts and zero-shot splits."""
    from c2s_pipeline.data.registry import describe_datasets

    if ctx.invoked_subcommand is None:
        for d in describe_datasets():
            typer.echo(json.dumps(d))


@datasets_app.command("check")
@friendly
def datasets_check(
    root: str = typer.Argument(..., help="A folder in the custom layout (data.dataset: folder)."),
    split: list[str] = typer.Option(["train", "val"], help="Splits to check (repeat)."),
    params: str = ParamsOpt,
):
    """Validate your own dataset folder before any compute: every problem with its file and what to do, then
    images and pixels per class (exit 1 when there are problems)."""
    from c2s_pipeline.data.folder import check_folder

    unseen = load_params(params).data.unseen if Path(params).is_file() else ()
    report = check_folder(root, tuple(split), tuple(unseen))
    for line in report["problems"]:
        typer.echo(f"problem: {line}")
    unseen_set = set(report["unseen"])
    typer.echo("| class | seen | " + " | ".join(f"{s} pixels" for s in report["splits"]) + " |")
    typer.echo("|---|---|" + "---:|" * len(report["splits"]))
    for name in report["classes"]:
        counts = " | ".join(str(r["pixels"][name]) for r in report["splits"].values())
        typer.echo(f"| {name} | {'unseen' if name in unseen_set else 'seen'} | {counts} |")
    typer.echo(
        ", ".join(f"{s}: {r['images']} images" for s, r in report["splits"].items())
        + f"; {len(report['problems'])} problems"
    )
    if report["problems"]:
        raise typer.Exit(1)


@app.command()
@friendly
def precompute(
    dataset: str | None = typer.Option(None, help="voc | context | cocostuff | world"),
    root: str | None = typer.Option(None, help="Dataset root in its standard layout."),
    split: str | None = typer.Option(None, help="Split (default: params data.train_split)."),
    clip: str | None = typer.Option(None, help="open_clip model name, e.g. ViT-B-16."),
    pretrained: str | None = typer.Option(None, help="open_clip tag (openai) or checkpoint path."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    store_format: str | None = typer.Option(None, "--format", help="zarr | h5"),
    distributed: bool = typer.Option(False, help="Shard images over a torchrun world."),
    cache_dir: str = CacheDirOpt,
    params: str = ParamsOpt,
):
    """Run the frozen CLIP teacher once per image into data_cache/ (resumes a killed run)."""
    from c2s_pipeline.stages import precompute as stage
    from c2s_pipeline.stages.distributed import init_distributed

    p = _params(
        params,
        data={"dataset": dataset, "root": root},
        teacher={"clip_model": clip, "pretrained": pretrained, "device": device, "store_format": store_format},
    )
    rank, world_size, barrier = init_distributed() if distributed else (0, 1, None)
    path = stage.run(
        p, split=split or p.data.train_split, cache_dir=cache_dir, rank=rank, world_size=world_size, barrier=barrier
    )
    if rank == 0:
        typer.echo(str(path))


@app.command()
@friendly
def train(
    run: str = typer.Option("models/c2s", help="Run folder (models/<run>)."),
    cache: str | None = typer.Option(None, help="Teacher store; default: the one of these params."),
    arch: str | None = typer.Option(None, help="smp architecture, e.g. segformer, unet, fpn."),
    encoder: str | None = typer.Option(None, help="smp encoder, e.g. mit_b0, resnet50."),
    encoder_weights: str | None = typer.Option(
        None, help="imagenet (smp's, needs them locally), a local encoder state_dict file, or none (scratch)."
    ),
    iterations: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    device: str | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    baseline: bool = typer.Option(False, help="Plain supervised seen-only student (all C2S terms off)."),
    resume: bool = typer.Option(True, help="Continue from models/<run>/checkpoint.pt if present."),
    distributed: bool = typer.Option(False, help="DistributedDataParallel over a torchrun world."),
    cache_dir: str = CacheDirOpt,
    params: str = ParamsOpt,
):
    """Train a student from the teacher store (CLIP is never loaded)."""
    from c2s_pipeline.stages import train as stage
    from c2s_pipeline.stages.distributed import init_distributed

    p = _params(
        params,
        student={"arch": arch, "encoder": encoder, "encoder_weights": encoder_weights},
        train={"iterations": iterations, "batch_size": batch_size, "device": device, "seed": seed},
    )
    if encoder_weights == "none":
        p = dataclasses.replace(p, student=dataclasses.replace(p.student, encoder_weights=None))
    if baseline:
        p = stage.baseline_params(p)
    rank, world_size, _ = init_distributed() if distributed else (0, 1, None)
    path = stage.run(p, run, cache=cache, cache_dir=cache_dir, resume=resume, rank=rank, world_size=world_size)
    if rank == 0:
        typer.echo(str(path))


@app.command()
@friendly
def evaluate(
    run: str | None = typer.Option(None, help="Run folder with student.pt."),
    clip_baseline: bool = typer.Option(False, help="Evaluate CLIP's own dense map instead."),
    out: str | None = typer.Option(None, help="Metrics JSON (default metrics/<run>.json)."),
    split: str | None = typer.Option(None),
    mode: str | None = typer.Option(None, help="whole | slide"),
    flip: bool | None = typer.Option(None),
    device: str | None = typer.Option(None),
    dataset: str | None = typer.Option(
        None, help="Score against another dataset's whole vocabulary (cross-dataset; with --root), e.g. ade20k."
    ),
    root: str | None = typer.Option(None, help="That dataset's root, in its layout."),
    vocab: str | None = typer.Option(
        None, help="With --dataset: its names' embeddings (`c2s vocab --dataset`), so CLIP is not loaded to embed them."
    ),
    cache_dir: str = CacheDirOpt,
    store: str | None = StoreOpt,
    params: str = ParamsOpt,
):
    """sIoU / uIoU / hIoU, per-class IoU and FPS on the full-label split; or, with --dataset, mIoU against another
    dataset's vocabulary (its names embedded once by the run's teacher and kept in --cache-dir, or --vocab)."""
    from c2s_pipeline.stages import evaluate as stage

    p = _params(params, eval={"mode": mode, "flip": flip, "device": device})
    if dataset is not None:
        if root is None or (run is None) == (not clip_baseline):  # so below: root is set, run is when needed
            raise ConfigError(
                "cross-dataset evaluation needs --root <the dataset's folder> and --run models/<run> or --clip-baseline"
            )
        from c2s_pipeline.stages import cross

        name = "clip_dense" if run is None else Path(run).name
        out = out or f"metrics/{name}-on-{dataset}.json"
        if run is None:
            typer.echo(
                str(
                    cross.run_teacher(p, out, dataset=dataset, root=root, split=split, cache_dir=cache_dir, vocab=vocab)
                )
            )
        else:
            typer.echo(
                str(
                    cross.run(
                        p,
                        run,
                        out,
                        dataset=dataset,
                        root=root,
                        split=split,
                        cache_dir=cache_dir,
                        store=store,
                        vocab=vocab,
                    )
                )
            )
        return
    if clip_baseline:
        typer.echo(str(stage.run_clip_baseline(p, out or "metrics/clip_dense.json", split=split, cache_dir=cache_dir)))
        return
    if run is None:
        raise ConfigError("pass --run models/<run> (or --clip-baseline)")
    typer.echo(
        str(stage.run(p, run, out or f"metrics/{Path(run).name}.json", split=split, cache_dir=cache_dir, store=store))
    )


@app.command()
@friendly
def predict(
    images: list[str] = typer.Argument(..., help="Image files."),
    run: str | None = typer.Option(None, help="Run folder with student.pt."),
    onnx: str | None = typer.Option(None, help="An exported model (`c2s export`) instead of --run."),
    classes: str | None = typer.Option(None, help="Comma-separated class names to predict."),
    vocab: str | None = typer.Option(None, help="Text embeddings from `c2s vocab`."),
    out: str = typer.Option("predictions", help="Output folder for overlay PNGs."),
    unlabelled: str | None = typer.Option(
        None, help="Pixels no name fits: none | threshold | background (default: predict.unlabelled)."
    ),
    threshold: float | None = typer.Option(
        None, help="Best class probability below which a pixel is unlabelled (with --unlabelled threshold)."
    ),
    opacity: float | None = typer.Option(None, help="Of the class colours over the image, 0..1."),
    cache_dir: str = CacheDirOpt,
    store: str | None = StoreOpt,
    params: str = ParamsOpt,
):
    """Overlay PNGs with a legend, from the student (or its ONNX export) and saved text embeddings only."""
    from c2s_pipeline.stages import predict as stage

    names = classes.split(",") if classes else None  # cleaned by the stage (clean_names)
    if (run is None) == (onnx is None):
        raise stage.PredictError("pass one of --run RUN_DIR or --onnx MODEL.onnx")
    # an exported graph deploys without a project: no params.yaml there means the defaults
    source = None if onnx is not None and params == "params.yaml" and not Path(params).is_file() else params
    p = override(load_params(source), predict={"unlabelled": unlabelled, "threshold": threshold, "opacity": opacity})
    if run is None:
        typer.echo(str(stage.run_onnx(images, str(onnx), out, vocab=vocab, classes=names, params=p)))
    else:
        typer.echo(str(stage.run(p, images, run, out, vocab=vocab, classes=names, cache_dir=cache_dir, store=store)))


@app.command()
@friendly
def export(
    run: str = typer.Option(..., help="Run folder with student.pt."),
    out: str = typer.Option("model.onnx", help="ONNX file to write."),
    vocab: str | None = typer.Option(None, help="Fold this vocabulary (`c2s vocab`) into the graph."),
    cache_dir: str = CacheDirOpt,
    store: str | None = StoreOpt,
):
    """The student as one ONNX graph: image (and text embeddings, unless --vocab folds them in) -> scores."""
    from c2s_pipeline.stages import export as stage

    typer.echo(str(stage.run(run, out, vocab=vocab, cache_dir=cache_dir, store=store)))


@app.command()
@friendly
def vocab(
    class_names: str | None = typer.Argument(None, help='Comma-separated names, e.g. "cat,dog,grass".'),
    output: str = typer.Option("vocab.pt", "-o", "--output"),
    dataset: str | None = typer.Option(
        None, help="Embed this dataset's class names (with --root) instead, for `c2s evaluate --dataset ... --vocab`."
    ),
    root: str | None = typer.Option(None, help="That dataset's root, in its layout."),
    clip: str | None = typer.Option(None),
    pretrained: str | None = typer.Option(None),
    params: str = ParamsOpt,
):
    """Text embeddings of a new vocabulary (CLIP's text tower, as `serve` uses it for new names)."""
    from c2s_pipeline.eval.open_vocab import write_vocab

    p = _params(params, teacher={"clip_model": clip, "pretrained": pretrained})
    if (class_names is None) == (dataset is None) or (dataset is not None and root is None):
        raise ConfigError('pass class names ("cat,dog,grass") or --dataset NAME --root PATH, not both')
    if class_names is None:
        from c2s_pipeline.stages import cross

        typer.echo(str(cross.write_target_vocab(p, output, dataset=str(dataset), root=str(root))))
        return
    typer.echo(str(write_vocab(p, class_names.split(","), output)))


@app.command()
@friendly
def serve(
    run: str = typer.Option("models/c2s", help="Run folder with student.pt."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for other machines)."),
    port: int = typer.Option(7860),
    examples: int = typer.Option(3, help="Validation images offered."),
    cache_dir: str = CacheDirOpt,
    store: str | None = StoreOpt,
    params: str = ParamsOpt,
):
    """A local page: upload an image, type class names, see the student's overlay (needs c2s[serve]). Beyond
    loopback, set C2S_SERVE_PASSWORD to require a password."""
    from c2s_pipeline.stages import serve as stage

    stage.run(_params(params), run, host=host, port=port, examples=examples, cache_dir=cache_dir, store=store)


@app.command()
@friendly
def report(
    metrics: list[str] = typer.Argument(..., help="Metrics JSON files from `c2s evaluate`."),
    out: str = typer.Option("metrics", help="Folder for report.md and the bar chart."),
    cross: list[str] = typer.Option(
        [], help="A metrics JSON of `c2s evaluate --dataset` (repeatable): a second table."
    ),
):
    """Markdown table + per-class bar chart of several evaluated runs."""
    from c2s_pipeline.stages import report as stage

    typer.echo(str(stage.run(metrics, out, cross)))


@app.command()
@friendly
def docs(
    metrics: str | None = typer.Option(
        None, help="A finished demo's metrics folder: the record is rewritten from it first."
    ),
    wall_clock: list[str] = typer.Option([], help="MM:SS of `time make demo`, with --metrics (repeatable)."),
    check: bool = typer.Option(False, help="Write nothing; exit 1 naming each generated file that differs."),
    repo: str = typer.Option(".", help="Repository root."),
    params: str = ParamsOpt,
):
    """Generate docs/results.md, the README's demo table and the pipeline drawings (from dvc.yaml)."""
    from c2s_pipeline.stages import docs as stage

    dense_mode = _params(params).teacher.dense_mode if metrics else "maskclip"
    stale = stage.run(repo, metrics, check=check, dense_mode=dense_mode, wall_clock=wall_clock or None)
    for path in stale:
        typer.echo(f"{path}: {'differs from what `c2s docs` generates' if check else 'regenerated'}")
    if check and stale:
        raise typer.Exit(1)


@cache_app.command("ls")
@friendly
def cache_ls(cache_dir: str = CacheDirOpt):
    """Stores with fingerprint, size and completeness."""
    from c2s_pipeline.cache.inspect import list_stores

    for s in list_stores(cache_dir):
        typer.echo(json.dumps(s, default=str))


@cache_app.command("verify")
@friendly
def cache_verify(path: str = typer.Argument(..., help="Store path or URL.")):
    """Check every finished image of a store: readable, right shapes, finite values."""
    from c2s_pipeline.cache.inspect import verify_store

    result = verify_store(path)
    typer.echo(json.dumps(result, default=str, indent=2))
    if result.get("problems"):
        raise typer.Exit(1)


@world_app.command("generate")
@friendly
def world_generate(
    out: str | None = typer.Option(None, help="Folder to write [default: params' data.root]."),
    params: str = ParamsOpt,
    style: str = typer.Option(
        "a",
        help="a: the embedded default (VOC layout + captions); b: its "
        "cross-dataset target (other ground, sizes, counts, half "
        "the classes; val only).",
    ),
):
    """Write the generated world."""
    from c2s_pipeline.stages import world as stage

    p = _params(params)
    typer.echo(str(stage.run_generate(p, out or p.data.root, style)))


@world_app.command("pretrain-teacher")
@friendly
def world_pretrain(
    world: str | None = typer.Option(None, help="The world [default: params' data.root]."),
    out: str | None = typer.Option(None, help="Checkpoint to write [default: params' teacher.pretrained]."),
    params: str = ParamsOpt,
):
    """Pretrain the world's small CLIP with open_clip on its image-caption pairs."""
    from c2s_pipeline.stages import world as stage

    p = _params(params)
    typer.echo(str(stage.run_pretrain(p, world or p.data.root, out or p.teacher.pretrained)))


@world_app.command("pretrain-encoder")
@friendly
def world_pretrain_encoder(
    world: str | None = typer.Option(None, help="The world [default: params' data.root]."),
    out: str | None = typer.Option(None, help="state_dict to write [default: params' student.encoder_weights]."),
    params: str = ParamsOpt,
):
    """Train the student's encoder to name the caption photos: the world's stand-in for ImageNet weights."""
    from c2s_pipeline.stages import encoder_pretrain

    p = _params(params)
    target = out or p.student.encoder_weights
    if not target or target == "imagenet":
        raise ConfigError("name the file to write: --out PATH (student.encoder_weights is not a file)")
    typer.echo(str(encoder_pretrain.run(p, world or p.data.root, target)))


@world_app.command("diagnose")
@friendly
def world_diagnose(
    out: str = typer.Option("metrics/world_diagnostics.json", help="JSON; the plot goes beside it."),
    run: list[str] = typer.Option([], help="NAME=RUN_DIR of a student to include (repeatable)."),
    metrics_dir: str = typer.Option("metrics", help="Where `c2s evaluate` wrote NAME.json."),
    cache_dir: str = CacheDirOpt,
    params: str = ParamsOpt,
):
    """Is the teacher able to teach? Prompt cosines, crop top-1, dense mIoU per mode, mining precision/recall."""
    from c2s_pipeline.stages import diagnose as stage

    if bad := [r for r in run if "=" not in r or not r.split("=", 1)[0]]:
        raise ConfigError(f"--run {bad[0]!r}: give NAME=RUN_DIR, e.g. --run c2s=models/c2s")
    runs = {name: Path(folder) for name, folder in (r.split("=", 1) for r in run)}
    metrics = {name: Path(metrics_dir) / f"{name}.json" for name in runs}
    typer.echo(str(stage.run(_params(params), out, cache_dir=cache_dir, runs=runs, metrics=metrics)))


if __name__ == "__main__":  # `torchrun -m c2s_pipeline.stages.cli ...`
    sys.exit(app())
