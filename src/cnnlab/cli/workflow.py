"""The training workflow commands: models, summary, train, evaluate, predict, read, plot."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from cnnlab.cli.config_flags import add_config_flags, changed_flags, config_from_args
from cnnlab.cli.options import add_data_dir, add_threads, positive_int, set_threads
from cnnlab.errors import CnnlabError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the workflow commands."""
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'seed004*'")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show input size, parameters, source and recipe",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list the named training recipes (train --recipe NAME)")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("summary", help="layers, shapes, parameters, multiply-adds, sizes")
    p.add_argument("model", help="a registered model id or a run folder")
    add_config_flags(p, only={"model_args"})
    p.add_argument("--depth", type=positive_int, default=3, help="nesting depth (default 3)")
    p.add_argument(
        "--input-size",
        type=_input_size,
        metavar="C,H,W",
        help="the input's channels, height and width, e.g. 3,224,224 (default: the model's "
        "declared input, or the run's)",
    )
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "train",
        help="train a model and test it; writes a run folder",
        description="Train a model on a dataset and evaluate it on the test "
        "split. Options left out take the model's own recipe "
        "(see 'cnnlab models -v'), then the defaults shown.",
    )
    add_config_flags(p)
    add_data_dir(p)
    p.add_argument(
        "--fallback-dataset",
        metavar="NAME",
        help="train on this dataset if --dataset cannot be found or downloaded",
    )
    add_threads(p)
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        metavar="N",
        help="train with N processes on this machine, data-parallel, as 'torchrun "
        "--nproc-per-node N -m cnnlab train ...' does (gloo on CPUs; NCCL and one GPU each "
        "on CUDA); --batch-size stays the global batch (default 1)",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue training this run folder")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="test trained runs on the test split; write confusion matrix and errors",
        description="Test one run, or several and the average of their probabilities, on "
        "the test split. Prints accuracy, loss and per-class precision and recall, and "
        "writes confusion.png, confusion.csv, per_class.csv, misclassified.png (every "
        "wrong test image; misclassified-2.png, ... when there are more than 200, at most "
        "20 pages), top-losses.png (the mistakes the model was surest of: the highest-loss "
        "wrong test images, with the probability of each wrong answer) and evaluation.json.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    p.add_argument(
        "--dataset",
        help="evaluate on this dataset instead of the run's own (same classes), e.g. an "
        "MNIST run on scikit-learn's digits",
    )
    p.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default="test",
        help="which images: the test split (default), the training split, or all of them "
        "(for a dataset the run never saw)",
    )
    add_data_dir(p)
    add_config_flags(p, only={"device"})
    add_threads(p)
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        help="folder for the reports (default: the run folder for one run; for several, "
        "ensemble/ inside the first run's folder)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each prediction over one-pixel shifts of the image (default: as each "
        "run was trained, so the figures match its metrics.json)",
    )
    p.add_argument(
        "--top-losses",
        type=positive_int,
        default=24,
        metavar="N",
        help="images in top-losses.png (default 24)",
    )
    p.add_argument("--no-reports", action="store_true", help="print only; write no files")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="classify image files (PNG, JPEG, …) with a run",
        description="Classify pictures with a trained run. Each one is prepared like the "
        "run's data: a handwritten digit MNIST-style (a picture without ink is 'blank'), a "
        "photo decoded and resized like the run's image folder or CIFAR-10.",
    )
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top", type=positive_int, default=3, help="classes to show (default 3)")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image: file, prediction, probabilities",
    )
    p.add_argument(
        "--explain",
        metavar="DIR",
        help="digit runs: write each picture's preparation stages as PNGs in DIR/<picture>/",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "read",
        help="read handwritten numbers in photos with a digit run",
        description="Find every digit in a photo of a handwritten number, read them left "
        "to right with a digit run, and print the number and each digit's confidence.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--run", required=True, metavar="RUN", help="a digit run folder")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per image: file, number, digits"
    )
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("plot", help="training curves and a grid of test predictions as PNG")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default: the run folder)")
    add_data_dir(p)
    p.add_argument(
        "--samples",
        type=positive_int,
        default=16,
        help="random test images in the grid (default 16)",
    )
    p.add_argument("--seed", type=int, default=0, help="which random images (default 0)")
    p.set_defaults(func=cmd_plot)


def cmd_models(args: argparse.Namespace) -> int:
    from cnnlab.models import get_model_spec, list_models

    names = list_models(args.pattern)
    if not names:
        raise CnnlabError(f"no model matches {args.pattern!r}")
    for name in names:
        spec = get_model_spec(name)
        if not args.verbose:
            print(f"{name:<22} {spec.description}")
            continue
        import cnnlab

        params = cnnlab.count_parameters(spec.create())
        c, h, w = spec.input_size
        fit = (
            ""
            if (c, h, w) == (1, 28, 28)
            else f" (digits {'padded' if spec.fit == 'pad' else 'resized'})"
        )
        print(
            f"{name}\n  {spec.description}\n  input {h}×{w}×{c}{fit}, "
            f"{params:,} parameters, from {spec.source}"
        )
        if spec.recipe:
            print("  recipe: " + ", ".join(_fmt_option(k, v) for k, v in spec.recipe.items()))
    return 0


def _fmt_option(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{key}={value:g}"
    if isinstance(value, dict):
        return f"{key}=" + ",".join(_fmt_option(k, v) for k, v in value.items())
    return f"{key}={value}"


def cmd_recipes(args: argparse.Namespace) -> int:
    from cnnlab.recipes import get_recipe, list_recipes

    for name in list_recipes():
        r = get_recipe(name)
        model = r.model + "".join(f" {_fmt_option(k, v)}" for k, v in r.model_args.items())
        print(f"{name}\n  {r.description}\n  model: {model}")
        print("  options: " + ", ".join(_fmt_option(k, v) for k, v in r.options.items()))
    return 0


def _input_size(text: str) -> tuple[int, int, int]:
    """``--input-size C,H,W``: three positive whole numbers."""
    try:
        size = tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,32,32, not {text!r}")
    return size[0], size[1], size[2]


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnlab.summary import summary

    target = Path(args.model)
    try:
        if (target / "config.json").exists():
            from cnnlab.runs import load_run

            run = load_run(target)
            size = args.input_size or run.preprocess.input_size
            print(summary(run.model, size, depth=args.depth))
        else:
            print(summary(args.model, args.input_size, depth=args.depth, **args.model_args))
    except RuntimeError as exc:  # torch's shape mismatch: an input the model cannot take
        detail = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
        raise CnnlabError(f"{args.model} cannot take input {args.input_size}: {detail}") from None
    return 0


def _length(metrics: dict, steps: int | None) -> str:
    """How long a run trained: ``350 steps`` when it was told a number of steps, else
    ``3 epochs`` (or ``1 epoch``)."""
    if steps:
        return f"{metrics['steps']:,} steps"
    epochs = metrics["epochs"]
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"


def cmd_train(args: argparse.Namespace) -> int:
    from cnnlab import distributed
    from cnnlab.launch import LAUNCHED_ENV, LOST_PEER_EXIT, launch

    if args.nproc > 1 and not distributed.env_context().active:
        return launch(args.nproc, args.argv, args.resume or args.out)
    try:
        ctx = distributed.start(args.device)
    except CnnlabError:
        if distributed.env_context().is_writer:
            raise
        return 2  # rank 0 says it
    try:
        code = _train(args)
    except CnnlabError:
        distributed.stop(wait=False)
        if ctx.is_writer:
            raise
        return 2  # rank 0 says it: the ranks share the same error
    except (RuntimeError, OSError) as exc:
        if not ctx.active:
            raise
        # A peer died: its collective fails here (or times out). One line, not a
        # traceback, and none under --nproc, whose launcher names the rank that died.
        if not os.environ.get(LAUNCHED_ENV):
            print(
                f"cnnlab train: error: rank {ctx.rank} lost the other processes ({_gist(exc)})",
                file=sys.stderr,
            )
        sys.stderr.flush()
        sys.stdout.flush()
        # a broken process group aborts in its destructors ("terminate called ..."):
        # leave without running them
        os._exit(LOST_PEER_EXIT)
    distributed.stop()
    return code


def _processes(metrics: dict) -> str:
    """`` in 2 processes`` for a data-parallel run, else nothing."""
    world = metrics.get("world_size", 1)
    return f" in {world} processes" if isinstance(world, int) and world > 1 else ""


def _gist(exc: BaseException) -> str:
    """The first line of ``exc``'s message without the source location gloo puts first."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", first)[:160]


def _train(args: argparse.Namespace) -> int:
    from cnnlab import distributed
    from cnnlab.runs import train_run

    set_threads(args)
    config = config_from_args(args)
    if args.resume:
        changed = [f for f in changed_flags(config) if f != "--epochs"]
        if changed:
            raise CnnlabError(
                f"--resume continues with the run's own settings; drop {', '.join(changed)} "
                "(only --epochs applies)"
            )
        result = train_run(
            config,
            data_dir=args.data_dir,
            resume=args.resume,
            more_epochs=args.epochs,
            progress=not args.quiet,
        )
    else:
        result = train_run(
            config,
            args.out,
            data_dir=args.data_dir,
            fallback_dataset=args.fallback_dataset,
            progress=not args.quiet,
        )
    m = result.metrics
    if not distributed.current().is_writer:
        return 0
    if args.json:
        print(json.dumps({"run": str(result.path), **m}))
    else:
        tta = f" with TTA ({100 * m['test_accuracy_no_tta']:.2f}% without)" if m.get("tta") else ""
        print(
            f"test accuracy {100 * m['test_accuracy']:.2f}%{tta}  test loss "
            f"{m['test_loss']:.4f}  ({m['dataset']}, {m['test_samples']:,} test images; "
            f"{_length(m, result.config.steps)}, {m['train_seconds']:.1f} s on {m['device']}"
            f"{_processes(m)}, "
            f"{m.get('precision', 'fp32')})"
        )
        print(f"run folder: {result.path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.evaluation import (
        check_report_dir,
        default_report_dir,
        evaluate_on_test,
        write_reports,
    )

    set_threads(args)
    if args.out and not args.no_reports:
        check_report_dir(args.out)  # before the work, not after it
    result = evaluate_on_test(
        args.runs,
        dataset=args.dataset,
        data_dir=args.data_dir,
        device=args.device,
        tta=args.tta,
        split=args.split,
    )
    reports = None
    if not args.no_reports:
        reports = write_reports(
            result, args.out or default_report_dir(args.runs), top=args.top_losses
        )
    if args.json:
        report = result.to_dict()
        if reports is not None:
            report["reports"] = [str(p) for p in reports.paths]
            report["misclassified_shown"] = reports.misclassified_shown
        print(json.dumps(report))
        return 0
    # "test accuracy" as before; another split says which images it counted
    split = "test" if args.split == "test" else f"{result.dataset} {args.split}"
    for e, tta in zip(result.runs, result.tta, strict=True):
        note = " (TTA)" if tta else ""
        print(f"{e.name}: {split} accuracy {100 * e.accuracy:.2f}%{note}  loss {e.loss:.4f}")
    if result.ensemble is not None:
        e = result.ensemble
        print(f"{e.name}: {split} accuracy {100 * e.accuracy:.2f}%  loss {e.loss:.4f}")
    final = result.final
    width = max(5, *(len(c) for c in final.classes))
    print(
        f"\nper class ({final.name if result.ensemble is not None else result.dataset + ' ' + args.split}, "
        f"{len(final.misclassified):,} of {final.num_samples:,} wrong):"
    )
    print(f"  {'class':<{width}}  precision   recall  support")
    for row in final.per_class():
        print(
            f"  {row['class']:<{width}}  {100 * row['precision']:8.2f}%  "
            f"{100 * row['recall']:6.2f}%  {row['support']:7,}"
        )
    if reports is not None:
        print(f"\nwrote into {reports.folder}:")
        for path in reports.paths:
            print(f"  {path}")
        if reports.capped:
            print(
                f"  (the pages show {reports.misclassified_shown:,} of "
                f"{reports.misclassified_total:,} misclassified images; "
                "evaluation.json lists them all)"
            )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnlab.predict import is_blank
    from cnnlab.runs import load_run

    run = load_run(args.run)
    # Each picture is prepared like the run's data: a digit MNIST-style, a photo decoded
    # and resized like the training folder (or CIFAR-10).
    batch = run.prepare([Path(f) for f in args.images])
    if args.explain:
        _explain(run, args.images, Path(args.explain))
    probs = run.predict(batch)
    digits = run.preparation.digits
    for file, image, p in zip(args.images, batch, probs, strict=True):
        blank = digits and is_blank(image)  # no ink: any answer would be a guess
        order = p.argsort(descending=True)
        if args.json:
            answer: dict[str, Any] = {"file": file, "prediction": None, "blank": True}
            if not blank:
                answer = {
                    "file": file,
                    "prediction": run.classes[int(order[0])],
                    "probabilities": {
                        c: round(float(v), 6) for c, v in zip(run.classes, p, strict=True)
                    },
                }
            print(json.dumps(answer))
        elif blank:
            print(f"{file}: blank (no ink found)")
        else:
            top = "  ".join(
                f"{run.classes[int(i)]} {100 * float(p[i]):.1f}%" for i in order[: args.top]
            )
            print(f"{file}: {top}")
    return 0


def _explain(run: Any, files: list[str], out: Path) -> None:
    """Each picture's preparation stages as PNGs in ``out/<n>-<file stem>/``."""
    from cnnlab.data.prepare import prepare_steps

    if not run.preparation.digits:
        raise CnnlabError("--explain shows the digit preparation; this run classifies photos")
    size = run.preparation.shape[1]
    for n, file in enumerate(files, start=1):
        folder = out / f"{n:02d}-{Path(file).stem}"
        steps = prepare_steps(Path(file), size)
        steps.save(folder)
        print(f"{file}: preparation stages in {folder}/", file=sys.stderr)


def cmd_read(args: argparse.Namespace) -> int:
    from cnnlab.read import read_number
    from cnnlab.runs import load_run

    run = load_run(args.run)
    for file in args.images:
        reading = read_number(run, Path(file))
        if args.json:
            print(json.dumps({"file": file, **reading.to_dict()}))
        elif not reading.digits:
            print(f"{file}: no digits found")
        else:
            parts = "  ".join(f"{d.digit} {100 * d.confidence:.1f}%" for d in reading.digits)
            print(f"{file}: {reading.number}  ({parts})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.runs import load_run
    from cnnlab.viz.plots import plot_history, plot_image_grid
    from cnnlab.viz.tiles import short_name

    run = load_run(args.run)
    out = Path(args.out) if args.out else run.path
    written = []
    if run.history:
        written.append(
            plot_history(
                run.history, out / "history.png", title=f"{run.config.model} on {run.dataset}"
            )
        )
    test = run.split("test", args.data_dir)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(test), generator=gen)[: args.samples]
    probs = run.predict(test.images[idx])
    pred = probs.argmax(1)
    titles, colors = [], []
    names = [short_name(c, 12) for c in run.classes]  # two names share a 1.6-inch title
    for t, p in zip(test.labels[idx].tolist(), pred.tolist(), strict=True):
        titles.append(f"true {names[t]} / pred {names[p]}")
        colors.append("black" if t == p else "red")
    written.append(
        plot_image_grid(
            test.images[idx],
            titles,
            out / "predictions.png",
            colors,
            columns=4,
            title="random test images: true / predicted",
        )
    )
    for path in written:
        print(path)
    return 0
