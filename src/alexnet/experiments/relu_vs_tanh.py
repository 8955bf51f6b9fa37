"""Figure 1 (§3.1): a four-layer convolutional net reaches 25% training error faster with ReLUs.

The net is the layout of cuda-convnet's CIFAR-10 example `layers-80sec.cfg` (Krizhevsky's code,
with which the paper's CIFAR-10 experiments were run): three 5×5 convolutions of 32, 32 and 64
kernels, each followed by a 3/2 pool (max, average, average), and a fully connected output: the
one example with exactly four learned layers, three convolutional and one fully connected. It
is NOT AlexNet. No regularisation of any kind (no weight decay, dropout, LRN or augmentation),
as in the paper. Images at 32×32 (CIFAR-10's size; digits and folders are resized to it),
standardised per channel with the training set's mean and std.

"The learning rates for each network were chosen independently to make training as fast as
possible": each activation's rate is the one of a short sweep that reaches the target error in
the fewest epochs (else the lowest error). Training error is measured on a fixed sample of at
most 1,000 training images, `checks_per_epoch` times per epoch; the epoch (and the training
seconds) at which it first reaches 25% is interpolated linearly between checks, so a target
reached within an epoch is measured in fractions of one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from alexnet.analysis.plots import plot_training_error
from alexnet.analysis.report import Section, Table, write_report
from alexnet.data import DataError, ImageSource, open_source
from alexnet.files import write_text_atomically
from alexnet.placement.device import resolve_device
from alexnet.run import folder as run_folder

log = logging.getLogger("alexnet")

IMAGE_SIZE = 32  # CIFAR-10's
PROBE_IMAGES = 1_000  # a fixed sample of training images on which training error is measured


class FourLayerNet(nn.Module):
    """cuda-convnet's layers-80sec layout: conv-pool ×3, fully connected (§3.1's 4-layer net)."""

    def __init__(self, classes: int, activation: str):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.layers = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # (B,32,16,16)
            nn.Conv2d(32, 32, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,32,8,8)
            nn.Conv2d(32, 64, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,64,4,4)
            nn.Flatten(), nn.Linear(64 * 4 * 4, classes),  # (B, classes)
        )  # fmt: skip

        for layer in self.layers:  # the same init for both activations: Kaiming-normal
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class TrainingSet:
    """A source's readable images at 32×32 in memory, with what standardises them."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,)
    mean: torch.Tensor  # (3, 1, 1)
    std: torch.Tensor  # (3, 1, 1)

    @classmethod
    def from_source(cls, source: ImageSource) -> TrainingSet:
        pictures, labels = [], []
        for index in range(len(source)):
            item = source.load(index, IMAGE_SIZE)
            if item is not None:
                image = item[0].resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                pictures.append(np.asarray(image))
                labels.append(item[1])
        if not pictures:
            raise DataError(f"no readable images in {source.name}")
        images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
        as_float = images.float()
        mean = as_float.mean(dim=(0, 2, 3))[:, None, None]
        std = as_float.std(dim=(0, 2, 3)).clamp_min(1.0)[:, None, None]
        return cls(images, torch.tensor(labels), mean, std)

    def batch(self, indices: torch.Tensor, device: torch.device):
        images = (self.images[indices].float() - self.mean) / self.std
        return images.to(device), self.labels[indices].to(device)


@dataclass
class Curve:
    """Training error against epochs (and training seconds) of one net at one learning rate."""

    epochs: list[float]
    seconds: list[float]
    errors: list[float]
    diverged: bool = False

    def reaches(self, target: float) -> tuple[float, float] | None:
        """(epochs, seconds) at which the error first reaches `target`, interpolated."""
        points = list(zip(self.epochs, self.seconds, self.errors, strict=True))
        for (e0, s0, err0), (e1, s1, err1) in zip(points, points[1:], strict=False):
            if err1 <= target:
                share = (err0 - target) / (err0 - err1) if err0 > target else 0.0
                return e0 + share * (e1 - e0), s0 + share * (s1 - s0)
        return None


@torch.no_grad()
def training_error(model: nn.Module, data: TrainingSet, probe: torch.Tensor, device) -> float:
    model.eval()
    wrong = 0
    for chunk in probe.split(1000):
        images, labels = data.batch(chunk, device)
        wrong += int((model(images).argmax(dim=1) != labels).sum())
    model.train()
    return wrong / len(probe)


def train_curve(
    data: TrainingSet,
    activation: str,
    lr: float,
    *,
    epochs: int,
    batch_size: int = 128,
    checks_per_epoch: int = 5,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Curve:
    """SGD with momentum 0.9 and nothing else; the training error `checks_per_epoch` times an
    epoch. Stops early when the loss becomes NaN or infinite (diverged)."""
    torch.manual_seed(seed)
    model = FourLayerNet(int(data.labels.max()) + 1, activation).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randperm(len(data.labels), generator=generator)[:PROBE_IMAGES]
    steps = math.ceil(len(data.labels) / batch_size)
    check_at = {round(steps * (c + 1) / checks_per_epoch) for c in range(checks_per_epoch)}
    curve = Curve([0.0], [0.0], [training_error(model, data, probe, device)])
    trained_seconds = 0.0
    for epoch in range(epochs):
        order = torch.randperm(len(data.labels), generator=generator)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            images, labels = data.batch(order[(step - 1) * batch_size : step * batch_size], device)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step in check_at:
                if not math.isfinite(loss.item()):
                    curve.diverged = True
                    return curve
                trained_seconds += time.perf_counter() - start
                curve.epochs.append(epoch + step / steps)
                curve.seconds.append(trained_seconds)
                curve.errors.append(training_error(model, data, probe, device))
                start = time.perf_counter()
    return curve


def sweep(
    data: TrainingSet,
    activation: str,
    lrs: Sequence[float],
    *,
    epochs: int,
    target: float,
    **options,
) -> tuple[float, dict[str, dict]]:
    """The learning rate that trains fastest: fewest epochs to `target`, else the lowest final
    error; and each rate's outcome."""
    outcomes = {}
    for lr in lrs:
        curve = train_curve(data, activation, lr, epochs=epochs, **options)
        reached = None if curve.diverged else curve.reaches(target)
        outcomes[f"{lr:g}"] = {
            "lr": lr,
            "diverged": curve.diverged,
            "epochs_to_target": reached[0] if reached else None,
            "final_error": curve.errors[-1],
        }
    usable = [o for o in outcomes.values() if not o["diverged"]]
    if not usable:
        raise DataError(f"{activation}: every learning rate of the sweep diverged; try lower ones")
    reached = [o for o in usable if o["epochs_to_target"] is not None]
    best = (
        min(reached, key=lambda o: o["epochs_to_target"])
        if reached
        else min(usable, key=lambda o: o["final_error"])
    )
    return best["lr"], outcomes


LAYOUT = (
    "cuda-convnet layers-80sec: conv 5×5×32, max-pool 3/2, conv 5×5×32, avg-pool 3/2, "
    "conv 5×5×64, avg-pool 3/2, fully connected; 32×32 inputs"
)


def run_experiment(
    source: str,
    out: Path,
    *,
    epochs: int = 8,
    sweep_epochs: int = 1,
    lrs: Sequence[float] = (0.003, 0.01, 0.03),
    target: float = 0.25,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Sweep, train ReLU and tanh, write relu-vs-tanh.png, relu-vs-tanh.json and report.html;
    `out` is locked meanwhile (a second experiment there is turned away)."""
    splits = open_source(source, seed=seed)
    with run_folder.lock(out):
        return _run_experiment(splits, out, epochs, sweep_epochs, lrs, target, batch_size, seed,
                               device)  # fmt: skip


def _run_experiment(splits, out, epochs, sweep_epochs, lrs, target, batch_size, seed, device):
    data = TrainingSet.from_source(splits.train)
    place = resolve_device(device)
    options = dict(batch_size=batch_size, seed=seed, device=place)
    result: dict = {"net": LAYOUT, "data": splits.description, "target": target}
    curves = {}
    for activation in ("relu", "tanh"):
        log.info("%s: sweeping learning rates %s", activation, ", ".join(map(str, lrs)))
        lr, outcomes = sweep(data, activation, lrs, epochs=sweep_epochs, target=target, **options)
        log.info("%s: learning rate %g; training %d epochs", activation, lr, epochs)
        curve = train_curve(data, activation, lr, epochs=epochs, **options)
        reached = curve.reaches(target)
        curves[activation] = (curve.epochs, curve.errors)
        result[activation] = {
            "lr": lr,
            "epochs_to_target": reached[0] if reached else None,
            "seconds_to_target": reached[1] if reached else None,
            "diverged": curve.diverged,
            "curve": {"epochs": curve.epochs, "seconds": curve.seconds, "errors": curve.errors},
            "sweep": outcomes,
        }
    relu, tanh = result["relu"]["epochs_to_target"], result["tanh"]["epochs_to_target"]
    result["ratio_epochs"] = tanh / relu if relu and tanh else None
    relu_s, tanh_s = result["relu"]["seconds_to_target"], result["tanh"]["seconds_to_target"]
    result["ratio_seconds"] = tanh_s / relu_s if relu_s and tanh_s else None
    plot_training_error(curves, out / "relu-vs-tanh.png", target)
    write_text_atomically(out / "relu-vs-tanh.json", json.dumps(result, indent=2) + "\n")
    _write_report(result, out)
    return result


def _write_report(result: dict, out: Path) -> None:
    def cell(value, unit=""):
        return "not reached" if value is None else f"{value:.2f}{unit}"

    rows = [
        [name, f"{result[key]['lr']:g}", cell(result[key]["epochs_to_target"]),
         cell(result[key]["seconds_to_target"], " s")]
        for key, name in (("relu", "ReLU"), ("tanh", "tanh"))
    ]  # fmt: skip
    ratio = result["ratio_epochs"]
    summary = (
        f"tanh needs {ratio:.1f}× the epochs of ReLU to reach {result['target']:.0%} training "
        "error (the paper: six times, on CIFAR-10)."
        if ratio
        else "One of the nets did not reach the target: train more epochs (--epochs)."
    )
    section = Section(
        "Figure 1: ReLU (solid) against tanh (dashed)",
        [summary, f"Net: {result['net']}. Data: {result['data']}."],
        Table(["activation", "learning rate", "epochs to target", "seconds to target"], rows),
        [("relu-vs-tanh.png", out / "relu-vs-tanh.png")],
    )
    write_report(out / "report.html", "Experiment: ReLU against tanh (§3.1)", str(out), [section])
