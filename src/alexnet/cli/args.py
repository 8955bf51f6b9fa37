"""Command-line options shared by several subcommands (commands.py, experiments.py, prepare.py)."""

from __future__ import annotations

import argparse

from alexnet.recipe import MAX_BATCH, MAX_SEED, MAX_WORKERS, shown

DATA_HELP = (
    "digits (scikit-learn's 8×8 digits, no download) | cifar10:PATH (the cifar-10-batches-py "
    "folder) | fashion-mnist[:PATH] or mnist[:PATH] (the four IDX files, plain or .gz; without "
    "PATH, fashion-mnist is read from the dataset-fashion-mnist package) | a folder with train/ "
    "and val/ (ILSVRC-2012 as distributed, or image folders) | one image-folder tree (a seeded, "
    "stratified 10%% is held out for validation)"
)


def whole_number_in(low: int, high: int | None = None, *, most: int | None = None):
    """argparse type: a whole number in low..high, or >= low and <= `most` (a bound against
    typos, reported on its own); the parser reports anything else in one line, before any
    work."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {shown(text)}") from None
        if value < low or (high is not None and value > high):
            expected = f"in {low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be <= {most}, got {value}")
        return value

    return parse


positive_int = whole_number_in(1)
WORKERS = whole_number_in(-1, most=MAX_WORKERS)  # -1: one per core
BATCH = whole_number_in(1, most=MAX_BATCH)
SEED = whole_number_in(0, MAX_SEED)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--workers", type=WORKERS, help="data-loading processes (-1: one per core)")
    parser.add_argument(
        "--batch-size", type=BATCH, help="images per batch (paper: 128; global batch "
        "under torchrun)"
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
