"""Images/s of `alexnet predict` over a folder of 500×375 JPEGs: batched against one at a time.

It writes N JPEGs (bench_pipeline's smooth random pictures, 10 class folders) to a temporary
folder and saves a randomly initialised network of the chosen recipe as a run's best.pt (with
the folder's real mean image; no training: speed does not depend on the weights). Then it times
what `alexnet predict RUN FOLDER` runs after loading the checkpoint, on the same files:
- batched: `TrainedNetwork.predict_files` (decode at reduced size, §2 preparation, centre crop,
  batches of the recipe's size through the network), with 0 loader workers and with `--workers`;
- one at a time: `TrainedNetwork.predict([path])` for each file, the same preprocessing with
  batches of one, as the command ran before it took folders.
Each figure is the best of `--repeats` passes, the ways taking turns, after a warm-up pass.

    PYTHONPATH=src python bench/bench_predict.py [--images 64] [--recipe digits] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from bench_pipeline import HEIGHT, WIDTH, write_jpegs

from alexnet import load
from alexnet.data import compute_stats, open_source
from alexnet.data.sources.folder import find_image_files
from alexnet.model import AlexNet
from alexnet.recipe import PRESETS, preset
from alexnet.run.checkpoint import save_atomically


def save_untrained_run(run: Path, folder: Path, recipe_name: str) -> None:
    """best.pt of a randomly initialised network, with the folder's classes and statistics."""
    recipe = preset(recipe_name)
    splits = open_source(str(folder), val_fraction=0.1)
    stats = compute_stats(splits.train, recipe.data.image_size, cache_dir=None, progress=False)
    model = AlexNet(len(splits.classes), **dataclasses.asdict(recipe.model))
    state = {
        "model": model.state_dict(),
        "recipe": recipe.to_dict(),
        "classes": splits.classes,
        "epoch": 0,
        "data_stats": stats.state_dict(),
    }
    save_atomically(state, run / "best.pt")


def best_rates(passes: dict, count: int, repeats: int) -> dict[str, float]:
    """Images/s of each pass: the best of `repeats`, taking turns, after one warm-up each."""
    best = dict.fromkeys(passes, float("inf"))
    for attempt in range(repeats + 1):
        for name, run_pass in passes.items():
            start = time.perf_counter()
            run_pass()
            if attempt > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--recipe", default="digits", choices=list(PRESETS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder, run = Path(temporary) / "pictures", Path(temporary) / "run"
        write_jpegs(folder, args.images)
        save_untrained_run(run, folder, args.recipe)
        net = load(run, device=args.device)
        paths = find_image_files([str(folder)])
        passes = {
            "batched, 0 workers": lambda: list(net.predict_files(paths, workers=0)),
            f"batched, {args.workers} workers": lambda: list(
                net.predict_files(paths, workers=args.workers)
            ),
            "one at a time": lambda: [net.predict([path]) for path in paths],
        }
        rates = best_rates(passes, len(paths), args.repeats)
    crop = preset(args.recipe).data.crop_size
    print(
        f"{len(paths)} JPEGs of {WIDTH}×{HEIGHT}, recipe {args.recipe} ({crop} px crops), batch "
        f"{net.batch_size}, {net.placement.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads"
    )
    one = rates.pop("one at a time")
    print(f"one at a time: {one:.1f} images/s")
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} images/s, {rate / one:.2f}× one at a time")


if __name__ == "__main__":
    main()
