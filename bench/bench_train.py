"""Training throughput of `alexnet train` (paper preset, full size) against a stock PyTorch loop.

Generates an ILSVRC-2012-layout tree of 500×375 JPEGs in a temporary folder, trains one epoch of
the `paper` recipe on it with `fit()` (decode, short side to 256, mean image, random 224 crop,
flip, PCA lighting, the paper's net, LRN and towers, the paper's SGD) and one epoch of the
reference measured in the same run: torchvision's ImageFolder, RandomResizedCrop + flip,
`torchvision.models.alexnet` and `torch.optim.SGD`. Prints images/s of both and their ratio.

    python bench/bench_train.py [--images 96] [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from alexnet.placement.device import resolve_device
from alexnet.recipe import apply_overrides, preset
from alexnet.train import fit


def make_tree(root: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    rows = ["ImageId,PredictionString"]
    for label, wnid in enumerate(["n01440764", "n01443537"]):
        for n in range(images // 2):
            pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "train" / wnid / f"{wnid}_{n}.JPEG", quality=90)
        for n in range(4):
            image_id = f"ILSVRC2012_val_{label * 4 + n:08d}"
            (root / "val").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
                root / "val" / f"{image_id}.JPEG"
            )
            rows.append(f"{image_id},{wnid} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


def ours(root: Path, batch_size: int, device: str, workers: int) -> float:
    recipe = apply_overrides(
        preset("paper"),
        [
            f"data.source={root}",
            "schedule.epochs=1",
            f"optim.batch_size={batch_size}",
            f"run.device={device}",
            f"run.workers={workers}",
        ],
    )
    run = root / "run"
    fit(recipe, run, progress=False)
    return json.loads((run / "metrics.jsonl").read_text())["images_per_s"]


def stock(root: Path, batch_size: int, device: torch.device, workers: int) -> float:
    transform = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )
    model = torchvision.models.alexnet(num_classes=2).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, start = 0, time.perf_counter()
    for batch, labels in loader:
        batch, labels = batch.to(device), labels.to(device)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
        optimizer.step()
        images += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96, help="training images (two classes)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_tree(root, args.images)
        reference = stock(root, args.batch_size, device, args.workers)
        paper = ours(root, args.batch_size, str(device), args.workers)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.images} images 500×375, batch {args.batch_size}, {args.workers} workers"
    )
    print(f"{'pipeline':<44}{'images/s':>10}{'ratio':>8}")
    print(f"{'stock loop: torchvision alexnet (OWT), SGD':<44}{reference:>10.1f}{1.0:>7.2f}x")
    print(
        f"{'alexnet train --recipe paper (one epoch)':<44}{paper:>10.1f}{paper / reference:>7.2f}x"
    )


if __name__ == "__main__":
    main()
