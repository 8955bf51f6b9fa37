"""Command-line options shared by several subcommands (cli.py, cli_experiments.py)."""

from __future__ import annotations

import argparse

DATA_HELP = (
    "digits (scikit-learn's 8×8 digits, no download) | cifar10:PATH (the cifar-10-batches-py "
    "folder) | a folder with train/ and val/ (ILSVRC-2012 as distributed, or image folders) | "
    "one image-folder tree (a seeded, stratified 10%% is held out for validation)"
)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (the parser reports anything else in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--workers", type=int, help="data-loading processes (-1: one per core)")
    parser.add_argument(
        "--batch-size", type=positive_int, help="images per batch (paper: 128; global batch "
        "under torchrun)"
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
