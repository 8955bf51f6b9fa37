"""Time to 10% held-out error: the `fashion-mnist` recipe on all 60,000 Fashion-MNIST images.

Trains `alexnet train --recipe fashion-mnist` (the paper's net, both towers, LRN, overlapping
pools, dropout; the recipe's comments give the runs behind each value) with `fit()`, then
prints, epoch by epoch, the wall-clock seconds since training began (validation, checkpoints and
figures included, from train.log's timestamps), the images/s and the held-out (official test
set) top-1 and top-5 error, and the first epoch whose top-1 error is at most the target. The
statistics pass is timed apart. Needs the data: `apt-get install dataset-fashion-mnist`, or
`--data fashion-mnist:PATH`.

    python bench/bench_fashion_mnist.py [--epochs N] [--target 0.10] [--out RUN]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from alexnet.data import compute_stats, open_splits
from alexnet.files import cache_dir
from alexnet.recipe import assign, preset
from alexnet.run.folder import read_metrics
from alexnet.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--target", type=float, default=0.10, help="held-out top-1 error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    args = parser.parse_args()

    recipe = assign(preset("fashion-mnist"), {"data.source": args.data, "run.seed": args.seed})
    if args.epochs:
        assign(recipe, {"schedule.epochs": args.epochs})
    start = time.perf_counter()
    compute_stats(open_splits(recipe.data).train, recipe.data.image_size,
                  cache_dir=cache_dir("stats"), progress=False)  # fmt: skip
    print(f"statistics pass (or cache): {time.perf_counter() - start:.0f} s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seed {args.seed}")
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.out or Path(scratch) / "run")
        fit(recipe, run, progress=False)
        records = read_metrics(run / "metrics.jsonl")
        ended = epoch_end_times(run / "train.log")
    reached = None
    for record in records:
        print(
            f"epoch {record['epoch']}: {ended[record['epoch']]:6.0f} s  "
            f"{record['images_per_s']:4.0f} img/s  held-out top-1 "
            f"{100 * record['val_top1_error']:.2f}%  top-5 {100 * record['val_top5_error']:.2f}%"
        )
        if reached is None and record["val_top1_error"] <= args.target:
            reached = (record["epoch"], ended[record["epoch"]])
    if reached:
        print(f"time to {args.target:.0%} held-out top-1 error: {reached[1]:.0f} s "
              f"({reached[1] / 60:.1f} min, epoch {reached[0]})")  # fmt: skip
    else:
        print(f"{args.target:.0%} held-out top-1 error not reached in {len(records)} epochs")


def epoch_end_times(log: Path) -> dict[int, float]:
    """Seconds from the start of training (the log's "training ..." line) to the end of each
    epoch (its "epoch N/M" line, written after validation): wall clock, from train.log."""
    start, ends = None, {}
    for line in log.read_text().splitlines():
        try:  # "2026-12-03 10:05:43,970 INFO message"; a record's further lines have no stamp
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        message = line.split(" ", 3)[3] if line.count(" ") >= 3 else ""
        if message.startswith("training "):
            start = stamp
        elif message.startswith("epoch ") and start is not None:
            ends[int(message.split()[1].split("/")[0])] = stamp - start
    return ends


if __name__ == "__main__":
    main()
