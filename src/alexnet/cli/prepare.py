"""The command line's `alexnet prepare SRC DST`: a thin call into
data/store/prepare.py (§2 once)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from alexnet.cli.args import DATA_HELP, WORKERS
from alexnet.recipe import MIN_CROP, PRESETS, apply_overrides, load_recipe


def _prepare(args: argparse.Namespace) -> int:
    from alexnet.data import open_source
    from alexnet.data.sources.specs import absolute_source
    from alexnet.data.store.prepare import Settings, prepare_store

    recipe = load_recipe(args.recipe)
    recipe.data.crop_size = MIN_CROP  # only the image size matters here: any the net can crop
    recipe = apply_overrides(recipe, args.set or []).data
    settings = Settings(
        source=absolute_source(args.source),
        image_size=recipe.image_size,
        encoding=args.format,
        quality=args.quality,
        val_fraction=recipe.val_fraction,
        split_seed=recipe.split_seed,
    )
    settings.check()
    splits = open_source(
        settings.source, val_fraction=settings.val_fraction, seed=settings.split_seed,
        download=args.download,
    )  # fmt: skip
    start = time.perf_counter()
    try:
        manifest = prepare_store(
            splits, Path(args.destination), settings, workers=args.workers,
            progress=not args.no_progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"alexnet: interrupted; the same command finishes {args.destination} from where it "
            "stopped", file=sys.stderr,
        )  # fmt: skip
        return 130
    seconds = time.perf_counter() - start
    images = manifest["images"]
    skipped = {split: len(files) for split, files in manifest["skipped"].items()}
    size = sum(path.stat().st_size for path in Path(args.destination).iterdir()) / 1e6
    print(
        f"prepared {images['train']} train and {images['val']} val images at "
        f"{manifest['image_size']} px ({manifest['encoding']}) in {seconds:.1f} s "
        f"({(images['train'] + images['val']) / seconds:.0f} images/s); skipped "
        f"{skipped['train']} train, {skipped['val']} val; {size:.1f} MB"
    )
    print(f"store:  {args.destination}")
    command = f"alexnet train --recipe {args.recipe} --data {args.destination}"
    if recipe.image_size != load_recipe(args.recipe).data.image_size:
        command += f" --set data.image_size={recipe.image_size}"
    print(f"train:  {command}")
    return 0


def add_prepare_command(commands) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="apply §2 once and write a prepared store that trains fast",
        description="One parallel pass over a data source: every image down-sampled as in §2 "
        "(shorter side to the recipe's image size, 256 for the paper, centre square), stored as "
        "JPEG bytes (or raw pixels) in one memory-mapped file per split, with the training set's "
        "mean image and RGB PCA computed in the same pass. Use the folder as --data anywhere. "
        "Killed at any point, running the same command again finishes it; a finished store is "
        "never rewritten.",
    )
    prepare.add_argument("source", metavar="SRC", help=f"the data: {DATA_HELP}")
    prepare.add_argument("destination", metavar="DST", help="a new (or empty) folder")
    prepare.add_argument(
        "--recipe", default="paper", help=f"whose image size: {', '.join(PRESETS)} (default: paper)"
    )
    prepare.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="override a recipe field, e.g. --set data.image_size=128",
    )  # fmt: skip
    prepare.add_argument(
        "--format", choices=["jpeg", "raw"], default="jpeg",
        help="jpeg (default; ~20 KB an image at 256 px) or raw uint8 pixels (196 KB at 256 px, "
        "no decoding)",
    )  # fmt: skip
    prepare.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    prepare.add_argument("--workers", type=WORKERS, default=-1, help="processes (-1: one per core)")
    prepare.add_argument(
        "--download",
        action="store_true",
        help="fetch CIFAR-10, Fashion-MNIST or MNIST through torchvision if not found",
    )
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(handler=_prepare)
