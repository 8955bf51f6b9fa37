"""The command line: `alexnet train`, `eval`, `predict`, `prepare`, `report`, `experiment`,
`export`, `import-torchvision`, `demo`.

Each subcommand parses its arguments and calls the library; `prepare` lives in prepare.py,
`report` and `experiment` in experiments.py, the options several commands share in args.py.
The one decision beyond that: `train` writes the run's report.html once `fit` has returned.
Errors a person can cause (errors.UserError: a missing path, a folder without images, a bad
`--set`, an unknown recipe, a checkpoint that is corrupt or of another variant) end with one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from alexnet.cli.args import DATA_HELP, SEED, add_run_flags, positive_int
from alexnet.cli.experiments import add_experiment_commands, add_report_command
from alexnet.cli.prepare import add_prepare_command
from alexnet.errors import TrainingDiverged, UserError
from alexnet.files import (
    OverwritesInput,
    refuse_overwriting,
    remove_temporaries,
    same_file,
    write_text_atomically,
)
from alexnet.recipe import PRESETS, Recipe, apply_overrides, assign, load_recipe, preset

# Each command imports the library modules it calls (torch, the data sources, matplotlib) when it
# runs, so that `alexnet --help`, a usage error or the report of an unchanged run (cli/
# experiments.py) answer without them.

log = logging.getLogger("alexnet")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit status 2), without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear through progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _configure_logging() -> None:
    if not any(isinstance(h, _TqdmHandler) for h in log.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


# Each flag sets one recipe field, with the value argparse parsed (recipe.assign checks it).
TRAIN_FLAGS = {
    "data": "data.source",
    "epochs": "schedule.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "device": "run.device",
    "seed": "run.seed",
    "workers": "run.workers",
}


def _recipe_for_training(args: argparse.Namespace, saved: dict | None) -> Recipe:
    """The preset or recipe file (or the resumed run's recipe), then --set, then the flags."""
    from alexnet.run import checkpoint

    if saved is not None:
        recipe = checkpoint.recipe_of(saved)
    else:
        recipe = load_recipe(args.recipe or "digits")
    apply_overrides(recipe, args.set or [])
    fields = {path: getattr(args, flag) for flag, path in TRAIN_FLAGS.items()}
    if args.no_compile:
        fields["run.compile"] = False
    return assign(recipe, {path: value for path, value in fields.items() if value is not None})


def _default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(args: argparse.Namespace) -> int:
    from alexnet.analysis.report import write_report_after_training
    from alexnet.placement.ranks import Ranks
    from alexnet.run import checkpoint
    from alexnet.run.lock import RunError
    from alexnet.train import fit

    ignored = [flag for flag, value in (("--out", args.out), ("--recipe", args.recipe)) if value]
    if args.resume and ignored:
        raise RunError(
            f"--resume {args.resume} goes on in that folder with its own recipe: drop "
            f"{' and '.join(ignored)} (--epochs and --set run.* may change)"
        )
    saved = checkpoint.load(Path(args.resume) / "last.pt") if args.resume else None
    recipe = _recipe_for_training(args, saved)
    run_dir = Path(args.resume) if args.resume else Path(args.out or _default_run_dir(recipe))
    summary = fit(
        recipe, run_dir, resume_from=saved, progress=not args.no_progress, download=args.download
    )
    if "stopped" in summary:
        return _report_stop(run_dir, summary["stopped"])
    if Ranks.main_process():
        write_report_after_training(run_dir, recipe)  # report.html; a failure only warns
        if "finished" in summary:
            print(f"stopped early: {summary['finished']}")
        _print_next_steps(run_dir, summary)
    return 0


def _report_stop(run_dir: Path, stopped: dict) -> int:
    """One line saying where a signal stopped training; exit status 128 + the signal."""
    from alexnet.placement.ranks import Ranks

    where = f"epoch {stopped['epoch']} step {stopped['step']}"
    if not stopped["step"]:
        where = f"the start of epoch {stopped['epoch']}"
    if Ranks.main_process():
        print(
            f"alexnet: stopped at {where} ({signal.Signals(stopped['signal']).name}); "
            f"checkpoint written; continue with: alexnet train --resume {run_dir}",
            file=sys.stderr,
        )
    return 128 + stopped["signal"]


def _print_next_steps(run_dir: Path, summary: dict) -> None:
    print(f"best validation top-1 error: {100 * summary['best_val_top1_error']:.2f}%")
    print(f"run folder: {run_dir}  (recipe.json, metrics.jsonl, best.pt, curves.png, conv1.png)")
    print(f"evaluate:   alexnet eval {run_dir} --ten-crop")
    print(f"predict:    alexnet predict {run_dir} IMAGE...")


def _keep_freed_memory() -> None:
    """The CPU allocator setting fit makes for training, made here for eval and predict: the
    command line, not the library, decides it for its process (host_memory.py)."""
    from alexnet.host_memory import keep_freed_memory

    keep_freed_memory()


def _evaluate(args: argparse.Namespace) -> int:
    from alexnet.evaluate import evaluate_checkpoint
    from alexnet.run import checkpoint
    from alexnet.run.folder import data_inputs, files_of_run

    _keep_freed_memory()
    state = checkpoint.load(args.target, prefer="best.pt")
    path = Path(state["path"])
    json_path = Path(args.json) if args.json else path.with_name(f"eval-{path.stem}.json")
    data = args.data or checkpoint.recipe_of(state).data.source
    refuse_overwriting([json_path], [*files_of_run(path), *data_inputs(data)])
    description, results = evaluate_checkpoint(
        state,
        data=args.data,
        ten_crop=args.ten_crop,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device or "auto",
        progress=not args.no_progress,
    )
    print(f"{state['path']} (epoch {state['epoch']}) on {description}")
    print(f"{'view':<13}{'top-1 err':>10}{'top-5 err':>11}{'loss':>9}{'images':>8}")
    for name, result in results.items():
        print(
            f"{name:<13}{100 * result['top1_error']:>9.2f}%{100 * result['top5_error']:>10.2f}%"
            f"{result['loss']:>9.4f}{result['images']:>8}"
        )
    report = {"checkpoint": str(path), "epoch": state["epoch"], "data": args.data, **results}
    write_text_atomically(json_path, json.dumps(report, indent=2) + "\n")
    print(f"written: {json_path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from alexnet.data import DataError
    from alexnet.data.sources.folder import find_image_files, printable
    from alexnet.inference import load, write_predictions_csv, write_predictions_json
    from alexnet.run.folder import files_of_run

    _keep_freed_memory()
    net = load(args.checkpoint, device=args.device or "auto", batch_size=args.batch_size)
    paths = find_image_files(args.images)
    refuse_overwriting([args.csv, args.json], [*files_of_run(net.path), *paths])
    if args.csv and args.json and same_file(args.csv, args.json):
        raise OverwritesInput(f"--csv and --json both name {args.csv}; give two files")
    predictions = net.predict_files(
        paths,
        top=args.top,
        ten_crop=args.ten_crop,
        workers=-1 if args.workers is None else args.workers,
        progress=not args.no_progress,
    )
    rows, skipped = [], []
    for path, prediction in predictions:
        if prediction is None:
            skipped.append(path)
            continue
        rows.append((path, prediction))
        if not (args.csv or args.json):
            names = map(printable, prediction[0])  # a class name may hold a terminal's escapes
            lines = [f"  {100 * p:6.2f}%  {c}" for c, p in zip(names, prediction[1], strict=True)]
            tqdm.write("\n".join([printable(path), *lines]))
    if not rows:
        raise DataError(f"no readable images among {len(paths)} files ({len(skipped)} skipped)")
    if args.csv:
        write_predictions_csv(args.csv, rows)
    if args.json:
        write_predictions_json(args.json, rows, skipped)
    for path in filter(None, (args.csv, args.json)):
        print(f"written: {path} ({len(rows)} images, {len(skipped)} skipped)")
    return 0


EXPORT_FORMATS = ("safetensors", "onnx")


def _export(args: argparse.Namespace) -> int:
    from alexnet.export import write_onnx, write_safetensors
    from alexnet.inference import read_saved_network
    from alexnet.run import folder as run_folder

    exporters = {"safetensors": write_safetensors, "onnx": write_onnx}
    state = read_saved_network(Path(args.target))
    path = Path(state["path"])
    out = Path(args.out) if args.out else path.with_suffix(f".{args.format}")
    refuse_overwriting([out], run_folder.files_of_run(path))
    with run_folder.lock_if_a_run(out.parent):
        # what an export killed mid-write left (hundreds of MB each time) goes first
        remove_temporaries(out.parent, lambda name: name.startswith(f".{out.name}."))
        exporters[args.format](state, out)
    print(f"written: {out} ({out.stat().st_size / 1e6:.1f} MB, {args.format}, from {path})")
    return 0


def _import_torchvision(args: argparse.Namespace) -> int:
    from alexnet.export import import_torchvision

    run_dir = Path(args.out or Path("runs") / f"torchvision-{time.strftime('%Y%m%d-%H%M%S')}")
    import_torchvision(args.weights, run_dir)
    print(f"run folder: {run_dir}  (recipe.json, best.pt, last.pt: torchvision's preprocessing)")
    print(f"evaluate:   alexnet eval {run_dir} --data /data/ILSVRC2012 --ten-crop")
    print(f"predict:    alexnet predict {run_dir} IMAGE...")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from alexnet.analysis.report import write_run_report
    from alexnet.data import open_splits
    from alexnet.train import fit

    recipe = preset("digits")
    if args.epochs:
        assign(recipe, {"schedule.epochs": args.epochs})
    run_dir = Path(args.out or _default_run_dir(recipe))
    start = time.perf_counter()
    summary = fit(recipe, run_dir, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    if "stopped" in summary:
        return _report_stop(run_dir, summary["stopped"])
    start = time.perf_counter()
    report = write_run_report(run_dir, device=recipe.run.device, workers=recipe.run.workers)
    report_seconds = time.perf_counter() - start
    samples = run_dir / "samples"
    samples.mkdir(exist_ok=True)
    held_out = open_splits(recipe.data).val
    sample_paths = []
    for index in range(4):
        image, label = held_out[index]
        sample_paths.append(samples / f"held-out-{index}-label-{label}.png")
        image.resize((64, 64)).save(sample_paths[-1])
    print(f"\ndemo: trained the 'digits' recipe in {seconds:.0f} s")
    print(f"held-out test top-1 error: {100 * summary['best_val_top1_error']:.2f}%")
    print(f"report:     {report}  (written in {report_seconds:.0f} s; open it in a browser)")
    _print_next_steps(run_dir, summary)
    print(f"e.g.        alexnet predict {run_dir} {' '.join(map(str, sample_paths[:2]))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever, Hinton, 2012): train, evaluate and predict "
        "with the paper's recipe.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a network from a recipe",
        description="Train AlexNet with a named recipe (paper, digits, cifar10) or a recipe "
        "file, writing a run "
        "folder: recipe.json, metrics.jsonl, last.pt, best.pt, curves.png, conv1.png, train.log. "
        "A flag overrides the recipe; --set overrides any recipe field.",
    )
    train.add_argument(
        "--recipe",
        help=f"preset ({', '.join(PRESETS)}) or a recipe JSON file, e.g. RUN/recipe.json to "
        "repeat a run (default: digits)",
    )
    train.add_argument("--data", help=f"the data: {DATA_HELP} (default: the recipe's)")
    train.add_argument("--out", help="run folder (default: runs/RECIPE-DATE-TIME)")
    train.add_argument("--epochs", type=int, help="epochs to train (paper: 90)")
    train.add_argument("--lr", type=float, help="initial learning rate ε (paper: 0.01)")
    train.add_argument(
        "--seed", type=SEED, help="seed for the model, split, batches and augmentation"
    )
    train.add_argument(
        "--no-compile",
        action="store_true",
        help="do not torch.compile the network on CUDA (compiled by default there; never on CPU)",
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    train.add_argument(
        "--download",
        action="store_true",
        help="fetch CIFAR-10, Fashion-MNIST or MNIST through torchvision if not found",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a recipe field, e.g. --set optim.lr=0.02 --set model.lrn=cuda-convnet "
        "(repeatable; sections: model, data, optim, schedule, run)",
    )
    add_run_flags(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "eval",
        help="top-1/top-5 error of a checkpoint, centre crop and ten crops",
        description="Evaluate a checkpoint on its validation data (or --data): top-1 and top-5 "
        "error on the centre crop and, with --ten-crop, averaged over ten crops (§4.1). "
        "Prints a table and writes it as JSON.",
    )
    evaluate.add_argument(
        "target", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder uses its best.pt"
    )
    evaluate.add_argument("--data", help=f"evaluate on other data: {DATA_HELP}")
    evaluate.add_argument("--ten-crop", action="store_true", help="also average ten crops (§4.1)")
    evaluate.add_argument(
        "--json", help="where to write the results (default: eval-CHECKPOINT.json beside it)"
    )
    add_run_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser(
        "predict",
        help="top-5 classes of images, files, folders or globs",
        description="The most probable classes, with probabilities, of each image (Figure 4, "
        "left), in batches on the device. Folders are searched at any depth for image files; "
        "an unreadable file is skipped with a warning naming it. Printed, or written one row "
        "per image with --csv or --json.",
    )
    predict.add_argument(
        "checkpoint", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder uses its best.pt"
    )
    predict.add_argument(
        "images", metavar="PATH", nargs="+", help="image files, folders or glob patterns"
    )
    predict.add_argument(
        "--top", type=positive_int, default=5, help="how many classes per image (default: 5)"
    )
    predict.add_argument("--ten-crop", action="store_true", help="average ten crops (§4.1)")
    predict.add_argument("--csv", metavar="FILE", help="write path, classes and probabilities")
    predict.add_argument("--json", metavar="FILE", help="the same as JSON, with skipped files")
    add_run_flags(predict)
    predict.set_defaults(handler=_predict)

    add_prepare_command(commands)
    add_report_command(commands)
    add_experiment_commands(commands)

    export = commands.add_parser(
        "export",
        help="write a network as safetensors or ONNX",
        description="Write a run's network (its best.pt, or a given checkpoint or .safetensors "
        "file) as safetensors (weights, class names, options and preprocessing, mean image "
        "included; `alexnet.load` and `alexnet predict` read it back) or as ONNX (LRN as ONNX's "
        "own LRN operator, a dynamic batch dimension; needs the onnx extra).",
    )
    export.add_argument(
        "target", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder uses its best.pt"
    )
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="file format")
    export.add_argument(
        "--out", metavar="FILE", help="where to write it (default: the checkpoint's name, .FORMAT)"
    )
    export.set_defaults(handler=_export)

    importer = commands.add_parser(
        "import-torchvision",
        help="make a run folder of torchvision's alexnet weights",
        description="Turn a torchvision.models.alexnet state_dict file (e.g. the IMAGENET1K_V1 "
        "weights, downloaded by you) into a run folder that eval and predict use: the owt "
        "variant, the 1000 ImageNet class names, torchvision's preprocessing for those weights "
        "(shorter side 256, centre crop 224, ImageNet mean and std). Nothing is downloaded.",
    )
    importer.add_argument("weights", metavar="WEIGHTS.pth", help="a state_dict saved by torch.save")
    importer.add_argument("--out", help="run folder (default: runs/torchvision-DATE-TIME)")
    importer.set_defaults(handler=_import_torchvision)

    demo = commands.add_parser(
        "demo",
        help="train the digits recipe and show how to evaluate and predict",
        description="Train the 'digits' recipe (scikit-learn's digits, no download) in minutes "
        "on a CPU, then print the held-out error and the commands to evaluate and predict.",
    )
    demo.add_argument("--out", help="run folder (default: runs/digits-DATE-TIME)")
    demo.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)
    kernels = commands.add_parser(
        "kernels",
        help="build the compiled CPU kernels ahead of use",
        description="Compile the CPU's C kernels (LRN, a batch's arithmetic) into the cache "
        "folder now, instead of at the start of the first run that uses them "
        "(run.native_kernels). They give the same bits as torch's operations, faster.",
    )
    kernels.set_defaults(handler=_kernels)
    return parser


def _kernels(args: argparse.Namespace) -> int:
    from alexnet.placement.kernels import build_kernels

    build_kernels(required=True)  # one line: what was built, where; or one line why not
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        return args.handler(args)
    except UserError as error:
        print(f"alexnet: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that cannot be read or written: forbidden, disk full
        where = f"{error.filename}: " if error.filename else ""
        print(f"alexnet: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"alexnet: training stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("alexnet: interrupted; the run folder keeps every finished epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
