"""The command line's `alexnet report` and `alexnet experiment relu-vs-tanh|ablations`: thin
calls into analysis/report.py and experiments/ (§3.1 Figure 1, §6.1 Figure 4, the ablations)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.analysis.cache import saved_page
from alexnet.cli.args import DATA_HELP, SEED, add_run_flags, positive_int
from alexnet.files import write_text_atomically
from alexnet.recipe import PRESETS
from alexnet.run.checkpoint_file import checkpoint_file
from alexnet.run.lock import lock

INITS = ("kaiming", "cuda-convnet")  # Figure 1's initialisations (experiments/relu_vs_tanh.py)


def _report(args: argparse.Namespace) -> int:
    """A page kept for this checkpoint, these options and unchanged data is copied (cache.py);
    only otherwise are the report's modules, torch among them, imported."""
    options = dict(
        samples=args.samples, indices=args.index, ten_crop=not args.no_ten_crop, bits=args.bits,
        queries=args.queries, device=args.device or "auto",
    )  # fmt: skip
    run = Path(args.run)
    page = saved_page(run, options)
    if page is not None:
        path = checkpoint_file(run, prefer="best.pt").parent / "report.html"
        with lock(path.parent):
            write_text_atomically(path, page.read_text())
        print(f"written: {path} (copied from {page}: checkpoint, run files and data unchanged)")
        return 0
    from alexnet.analysis.report import write_run_report

    workers = 0 if args.workers is None else args.workers
    path = write_run_report(run, workers=workers, progress=not args.no_progress, **options)
    print(f"written: {path}")
    return 0


def _relu_vs_tanh(args: argparse.Namespace) -> int:
    from alexnet.experiments.relu_vs_tanh import DEFAULT_TARGETS, level_rows, run_experiment
    from alexnet.run.folder import claim_experiment

    claim_experiment(Path(args.out), ["relu-vs-tanh.png", "relu-vs-tanh.json"], args.data)
    result = run_experiment(
        args.data,
        Path(args.out),
        epochs=args.epochs,
        sweep_epochs=args.sweep_epochs,
        lrs=args.lrs,
        linear_lrs=args.linear_lrs,
        linear_epochs=args.linear_epochs,
        widen=args.widen,
        targets=args.target or DEFAULT_TARGETS,  # the paper's 25% first
        batch_size=args.batch_size or 128,
        seed=args.seed,
        seeds=args.seeds,
        init=args.init,
        input_scale=args.input_scale,
        train_subset=args.train_subset,
        device=args.device or "auto",
    )
    rates = ", ".join(f"{kind} {result[kind]['lr']:g}" for kind in ("linear", "relu", "tanh"))
    print(f"data: {result['data']}; input scale {result['input_scale']}; init {result['init']}; "
          f"seeds {result['seeds']}; learning rates: {rates}")  # fmt: skip
    print(f"linear floor (lowest training error of a linear classifier): "
          f"{result['linear_floor']:.1%}")  # fmt: skip
    print("training error | ReLU epochs | tanh epochs | tanh / ReLU epochs [95% interval]")
    for row in level_rows(result):
        print(" | ".join(row))
    print("(the paper: about 6x at 25% on CIFAR-10, far below its linear floor)")
    print(f"written: {args.out}/relu-vs-tanh.png, relu-vs-tanh.json, report.html")
    return 0


def _ablations(args: argparse.Namespace) -> int:
    from alexnet.experiments.ablation_verdicts import ablation_table, markdown
    from alexnet.experiments.ablations import run_ablations
    from alexnet.run.folder import claim_experiment

    claim_experiment(Path(args.out))  # its runs claim their own folders
    flags = {"data.source": args.data, "schedule.epochs": args.epochs, "run.device": args.device}
    flags |= {"optim.batch_size": args.batch_size, "run.workers": args.workers}
    summary = run_ablations(
        Path(args.out),
        base=args.recipe,
        seeds=args.seeds,
        overrides=args.set or [],
        fields={path: value for path, value in flags.items() if value is not None},
        progress=not args.no_progress,
    )
    print(markdown(ablation_table(summary["ablations"])))
    print(f"written: {args.out}/ablations.md, ablations.json, report.html")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a training error is between 0 and 1, got {value}")
    return value


def _learning_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"learning rates must be > 0, got {text!r}")
    return rates


def add_report_command(commands) -> None:
    report = commands.add_parser(
        "report",
        help="write a run's report.html",
        description="Write RUN/report.html, one self-contained page (images embedded): the "
        "recipe, the data, the curves, conv1 (Figure 3), evaluation on one crop and ten crops, "
        "top-5 panels and fc7 nearest neighbours (Figure 4; top5.png, neighbours.png), the "
        "binary codes' recall (codes.json, §6.1) and timings. what is computed from the "
        "checkpoint (evaluation, fc7 features, codes) is cached in RUN/cache/.",
    )
    report.add_argument("run", metavar="RUN_DIR", help="a run folder (uses its best.pt)")
    report.add_argument(
        "--samples", type=positive_int, default=8, help="validation images shown (default: 8)"
    )
    report.add_argument(
        "--index", type=int, action="append", help="show this validation image (repeatable)"
    )
    report.add_argument("--no-ten-crop", action="store_true", help="evaluate the centre crop only")
    report.add_argument("--bits", type=positive_int, default=256, help="code length (default 256)")
    report.add_argument(
        "--queries", type=positive_int, default=1_000,
        help="the codes' recall is measured for a seeded sample of at most this many validation "
        "images (default: 1000)",
    )  # fmt: skip
    add_run_flags(report)
    report.set_defaults(handler=_report)


def add_experiment_commands(commands) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="the paper's experiments: relu-vs-tanh (Figure 1), ablations",
        description="Rerun the paper's experiments; each writes its figures, JSON and report.html.",
    )
    kinds = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    relu = kinds.add_parser(
        "relu-vs-tanh",
        help="Figure 1: a four-layer net with ReLU against tanh",
        description="§3.1, Figure 1: a four-layer convolutional net (cuda-convnet's "
        "layers-80sec layout) trained with ReLU and with tanh, each at the learning rate of a "
        "sweep that trains it fastest (widened until that rate is inside it), no regularisation; "
        "the epochs each needs to reach each --target training error (the paper: 25%%) and "
        "the tanh/ReLU ratio at each, against the linear floor: the lowest training error of "
        "a linear classifier trained the same way.",
    )
    relu.add_argument("--data", default="digits", help=f"the data: {DATA_HELP}")
    relu.add_argument("--out", required=True, help="output folder")
    relu.add_argument("--epochs", type=positive_int, default=8, help="epochs (default: 8)")
    relu.add_argument("--sweep-epochs", type=positive_int, default=1, help="per rate (default 1)")
    relu.add_argument(
        "--lrs", type=_learning_rates, default=[0.003, 0.01, 0.03], help="rates to sweep"
    )
    relu.add_argument(
        "--widen", type=int, default=4, metavar="N",
        help="rates tried beyond the sweep's end while the best is there (default: 4; 0: none)",
    )  # fmt: skip
    relu.add_argument(
        "--linear-lrs", type=_learning_rates,
        help="rates to sweep for the linear baseline (default: --lrs)",
    )  # fmt: skip
    relu.add_argument(
        "--linear-epochs", type=positive_int,
        help="epochs of the linear baseline (default: --epochs; longer gives a stricter floor)",
    )  # fmt: skip
    relu.add_argument("--seed", type=SEED, default=0, help="the first seed (init, order, probe)")
    relu.add_argument(
        "--seeds", type=positive_int, default=1,
        help="train every net for N seeds; ratios get a 95%% interval over them (default: 1)",
    )  # fmt: skip
    relu.add_argument(
        "--input-scale", choices=("standardised", "raw"), default="standardised",
        help="standardised (default: channel mean and std) or raw (the paper's: the mean image "
        "subtracted from 0-255 pixels, nothing divided)",
    )  # fmt: skip
    relu.add_argument(
        "--target", type=_fraction, action="append",
        help="a training error to time, any level, above or below the linear floor (repeatable; "
        "default: 0.25 0.2 0.15 0.1; the paper's: 0.25)",
    )  # fmt: skip
    relu.add_argument(
        "--init", choices=INITS, default="kaiming",
        help="kaiming (default) or cuda-convnet (layers-80sec's Gaussians: σ 1e-4 for conv1, "
        "1e-2 after)",
    )  # fmt: skip
    relu.add_argument(
        "--train-subset", type=positive_int, metavar="N",
        help="train on a fixed, seeded subset of N images (default: all)",
    )  # fmt: skip
    add_run_flags(relu)
    relu.set_defaults(handler=_relu_vs_tanh)
    ablations = kinds.add_parser(
        "ablations",
        help="the paper's net against each of its choices removed",
        description="Train the paper's net and, for N seeds each, the net without LRN, with "
        "non-overlapping pooling, without PCA lighting, without dropout, and as one tower of "
        "half width (§3.2); a table of validation top-1/top-5 error with the paper's figures "
        "beside it. Rerunning resumes where it stopped.",
    )
    ablations.add_argument(
        "--recipe", default="digits", help=f"preset ({', '.join(PRESETS)}) or a recipe JSON file"
    )
    ablations.add_argument("--data", help=f"the data: {DATA_HELP} (default: the recipe's)")
    ablations.add_argument("--out", required=True, help="output folder (one run per ablation)")
    ablations.add_argument("--seeds", type=positive_int, default=2, help="seeds (default: 2)")
    ablations.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's)")
    ablations.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a recipe field"
    )
    add_run_flags(ablations)
    ablations.set_defaults(handler=_ablations)
