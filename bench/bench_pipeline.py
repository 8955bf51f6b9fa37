"""Images/s of the paper's training pipeline (§2, §4.1), against a plain torchvision reference
measured in the same run.

It writes N 500×375 JPEGs (smooth random pictures, quality 90, 10 class folders) to a temporary
folder, computes their statistics (mean image and RGB PCA at 256 px; timed apart), and then
times full passes over them, single process and with worker processes:
- ours: decode + shorter side to 256 + centre square + random 224 crop + horizontal flip in the
  workers, then mean-image subtraction + PCA lighting on the batch (`make_batches`, the `paper`
  recipe: what training runs);
- reference: torchvision's ImageFolder with decode + RandomResizedCrop(224) +
  RandomHorizontalFlip + ToTensor, in a DataLoader with the same batch size and workers.
Each figure is the best of `--repeats` passes (the two pipelines taking turns) after a warm-up.
The ratio is ours over the reference (above 1: ours is faster). The main process uses one
intra-op thread, as loader workers do, so workers=0 measures one core.

    PYTHONPATH=src python bench/bench_pipeline.py [--images 200] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from alexnet.data import compute_stats, make_batches, open_source
from alexnet.placement.kernels import build_kernels
from alexnet.recipe import preset

WIDTH, HEIGHT = 500, 375
CLASSES = 10


def write_jpegs(root: Path, count: int) -> None:
    """Smooth random pictures with some grain, so JPEG decoding costs what photographs cost."""
    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.integers(0, 256, (HEIGHT // 25, WIDTH // 25, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC))
        grain = rng.integers(-12, 13, smooth.shape)
        pixels = np.clip(smooth.astype(np.int16) + grain, 0, 255).astype(np.uint8)
        folder = root / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:05d}.jpg", quality=90)


def pass_seconds(loader) -> tuple[int, float]:
    """(images, seconds) for one full pass over a loader."""
    start = time.perf_counter()
    count = sum(len(batch[0]) for batch in loader)
    return count, time.perf_counter() - start


def best_rates(loaders: list, repeats: int) -> list[float]:
    """Images/s of each loader: the best of `repeats` passes, the loaders taking turns (so a
    busy moment on the machine hits both), after one warm-up pass each (starts the workers)."""
    best = [float("inf")] * len(loaders)
    for attempt in range(repeats + 1):
        for k, loader in enumerate(loaders):
            count, seconds = pass_seconds(loader)
            if attempt > 0:
                best[k] = min(best[k], seconds)
    return [count / seconds for seconds in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(1)  # one core per process, as in loader workers
    recipe = preset("paper").data
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "pictures"
        write_jpegs(root, args.images)
        splits = open_source(str(root), val_fraction=0.1)
        source = splits.train  # 90% of the pictures; the reference reads the same files
        train_files = {source.path(index) for index in range(len(source))}
        start = time.perf_counter()
        stats = compute_stats(source, recipe.image_size, cache_dir=None, progress=False)
        stats_seconds = time.perf_counter() - start
        reference = torchvision.datasets.ImageFolder(
            str(root),
            transforms.Compose(
                [
                    transforms.RandomResizedCrop(recipe.crop_size),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                ]
            ),
            is_valid_file=train_files.__contains__,
        )
        print(
            f"{len(source)} JPEGs of {WIDTH}×{HEIGHT}, batch {args.batch_size}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"
        )
        print(
            f"statistics pass at {recipe.image_size} px: {len(source) / stats_seconds:.0f} images/s"
        )
        native = build_kernels(required=False)  # the arithmetic as training runs it
        for workers in args.workers:
            ours_rate, reference_rate = best_rates(
                [
                    make_batches(
                        source, recipe, stats, args.batch_size, train=True, workers=workers,
                        native_kernels=native,
                    ),
                    DataLoader(
                        reference,
                        batch_size=args.batch_size,
                        shuffle=True,
                        num_workers=workers,
                        persistent_workers=workers > 0,
                    ),
                ],
                args.repeats,
            )
            print(
                f"workers={workers}: paper pipeline {ours_rate:.0f} images/s, "
                f"reference {reference_rate:.0f} images/s, ratio {ours_rate / reference_rate:.2f}"
            )


if __name__ == "__main__":
    main()
