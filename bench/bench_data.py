"""Images/s of the data path as training consumes it (§2, §4.1): the loader alone and, on CUDA,
the paper's net trained from it.

The loader is `data.make_batches` for the `paper` recipe: decode, random 224 window, flip and
lighting draws in the workers, uint8 batches, mean image, PCA lighting and standardisation on
the device (on CUDA a prepared store's JPEGs decode there too). Its rate counts the images of
the batches delivered to the device, as training receives them, over whole passes (the best of
--repeats after a warm-up pass that starts the workers).

    PYTHONPATH=src python3 bench/bench_data.py --data SOURCE [--workers N] [--batch-size N]
    PYTHONPATH=src python3 bench/bench_data.py [--images 512]

With --data, the first line is `loader: N images/s` for that source. Without it, the script
writes --images 500×375 JPEGs (bench_pipeline.write_jpegs) into a temporary image folder,
prepares a store of them with `alexnet prepare`'s code (its own images/s printed), and measures
the loader over the store (the first line) and over the image folder, a pass of each in turn,
with their ratio.
On CUDA (or with --train-steps on a CPU) it then trains the paper's net from the store, or the
given source, as `alexnet train` does (bf16, channels_last, compiled, the paper's SGD) and
prints the end-to-end images/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_pipeline import write_jpegs

from alexnet import AlexNet
from alexnet.data import compute_stats, make_batches, open_source
from alexnet.data.store.prepare import Settings, prepare_store
from alexnet.files import cache_dir
from alexnet.optim import PaperSGD
from alexnet.placement import Placement
from alexnet.recipe import preset
from alexnet.train import training_step


def batches_of(spec: str, args, placement: Placement, workers: int, cache: bool = True):
    """The paper recipe's training batches of `spec` where `placement` puts them (its device,
    its compiled CPU arithmetic), and the classes; cache: keep the statistics of data that
    outlives the run in the statistics cache."""
    recipe = preset("paper")
    splits = open_source(spec)
    stats = compute_stats(
        splits.train, recipe.data.image_size, cache_dir=cache_dir("stats") if cache else None,
        workers=workers, progress=False,
    )  # fmt: skip
    batches = make_batches(
        splits.train, recipe.data, stats, args.batch_size, train=True, device=placement.device,
        workers=workers, gpu_decode=not args.no_gpu_decode,
        native_kernels=placement.native_kernels,
    )  # fmt: skip
    return batches, len(splits.classes)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rates(loaders: list, repeats: int, device: torch.device) -> list[float]:
    """Images/s of each loader over whole passes: the best of `repeats` rounds, each round one
    pass of every loader in turn (a noisy machine slows them alike), after one warm-up round."""
    best = [float("inf")] * len(loaders)
    counts = [0] * len(loaders)
    for attempt in range(repeats + 1):
        for which, batches in enumerate(loaders):
            synchronize(device)
            start = time.perf_counter()
            counts[which] = sum(len(labels) for _, labels, _ in batches)
            synchronize(device)
            if attempt:
                best[which] = min(best[which], time.perf_counter() - start)
    return [count / seconds for count, seconds in zip(counts, best, strict=True)]


def training_rate(batches, classes: int, steps: int, device: torch.device, compile: bool):
    """Images/s of the paper's net trained from `batches` for `steps` steps (after 20 warm-up
    steps: compilation and cuDNN's autotuning), passes repeated as needed."""
    run = preset("paper").run
    run.compile = compile
    placement = Placement.for_run(run, str(device))
    placement.prepare()
    model = placement.model(AlexNet(max(classes, 1000)))  # ImageNet's fc8 at the least
    step_model = placement.step_model(model)
    optimizer = PaperSGD(model.parameters(), lr=0.01)
    warm_up, done, images, start = 20, 0, 0, 0.0
    while done < warm_up + steps:
        for batch, labels, _ in batches:
            if done == warm_up:
                synchronize(device)
                start = time.perf_counter()
            training_step(step_model, optimizer, batch, labels, placement)
            done += 1
            images += len(labels) if done > warm_up else 0
            if done == warm_up + steps:
                break
    synchronize(device)
    return images / (time.perf_counter() - start), placement.description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="any --data source; default: generated 500×375 JPEGs")
    parser.add_argument("--images", type=int, default=1024, help="JPEGs to generate")
    parser.add_argument("--format", choices=["jpeg", "raw"], default="jpeg", help="the store's")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[-1], help="loader processes, one figure each "
        "(-1: one per core, as training; 0: the main process alone)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-steps", type=int, help="default: 200 on CUDA, none on a CPU")
    parser.add_argument("--no-gpu-decode", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    placement = Placement.for_run(preset("paper").run, args.device)
    placement.prepare()  # as training does: cuDNN's autotuner, or the CPU's allocator setting
    device = placement.device
    train_steps = args.train_steps or (200 if device.type == "cuda" else 0)

    with tempfile.TemporaryDirectory() as folder:
        spec, folder_spec = args.data, None
        if spec is None:
            folder_spec, spec = str(Path(folder) / "pictures"), str(Path(folder) / "store")
            write_jpegs(Path(folder_spec), args.images)
            settings = Settings(folder_spec, preset("paper").data.image_size, args.format)
            start = time.perf_counter()
            manifest = prepare_store(
                open_source(folder_spec), Path(spec), settings, workers=args.workers[0],
                progress=False,
            )  # fmt: skip
            prepare_rate = sum(manifest["images"].values()) / (time.perf_counter() - start)
        for run, workers in enumerate(args.workers):
            batches, classes = batches_of(spec, args, placement, workers)
            loaders = [batches]
            if folder_spec is not None:  # the same JPEGs as an image folder, in the same rounds
                loaders.append(batches_of(folder_spec, args, placement, workers, cache=False)[0])
            rates = loader_rates(loaders, args.repeats, device)
            what = f"{batches.loader.num_workers} workers"
            if run == 0:
                print(f"loader: {rates[0]:.0f} images/s")
                print(f"  ({spec}, batch {args.batch_size}, {device}, torch {torch.__version__})")
            print(f"{what}: {'store ' if folder_spec else ''}{rates[0]:.0f} images/s")
            if folder_spec is not None:
                print(
                    f"{what}: image folder {rates[1]:.0f} images/s (the same 500×375 JPEGs); "
                    f"ratio store / image folder {rates[0] / rates[1]:.2f}"
                )
            del loaders[1:]  # the image folder's workers end here
            if run < len(args.workers) - 1:
                del batches, loaders
        if folder_spec is not None:
            print(
                f"alexnet prepare: {prepare_rate:.0f} images/s ({args.images} JPEGs to "
                f"{args.format}, workers={args.workers[0]})"
            )
        if train_steps:
            images_per_s, fast_paths = training_rate(
                batches, classes, train_steps, device, compile=not args.no_compile
            )
            print(
                f"train: {images_per_s:.0f} images/s end to end (paper net, batch "
                f"{args.batch_size}, {train_steps} steps{fast_paths})"
            )


if __name__ == "__main__":
    main()
