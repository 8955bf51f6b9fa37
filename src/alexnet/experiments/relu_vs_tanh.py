"""Figure 1 (§3.1): a four-layer convolutional net reaches 25% training error faster with ReLUs.

The net is the layout of cuda-convnet's CIFAR-10 example `layers-80sec.cfg` (Krizhevsky's code,
with which the paper's CIFAR-10 experiments were run): three 5×5 convolutions of 32, 32 and 64
kernels, each followed by a 3/2 pool (max, average, average), and a fully connected output: the
one example with exactly four learned layers, three convolutional and one fully connected. It
is NOT AlexNet. No regularisation of any kind (no weight decay, dropout, LRN or augmentation),
as in the paper. Images at 32×32 (CIFAR-10's size; digits and folders are resized to it),
standardised per channel with the training set's mean and std.

"The learning rates for each network were chosen independently to make training as fast as
possible": each activation's rate is the one of a short sweep that reaches the lowest of the
target errors it can in the fewest epochs (else the lowest error). Training error is measured on
a fixed sample of at most 1,000 training images, `checks_per_epoch` times per epoch; the epoch
(and the training seconds) at which it first reaches each target (the paper's is 25%, on
CIFAR-10; a larger data set passes it within an epoch, so several are reported, with the
tanh/ReLU ratio at each) is interpolated linearly between checks.

Initialisation: `kaiming` (Kaiming-normal weights for both activations) or `cuda-convnet`, the
Gaussians of the layers-80sec file the paper's CIFAR-10 runs started from (σ = 1e-4 for conv1,
1e-2 for the other layers, biases 0). `train_subset` trains on a fixed, seeded subset.
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


INITS = ("kaiming", "cuda-convnet")
DEFAULT_TARGETS = (0.25, 0.20, 0.15, 0.10)  # the paper's 25% first; a larger set passes it fast
CUDA_CONVNET_STD = (1e-4, 1e-2, 1e-2, 1e-2)  # layers-80sec's initW: conv1, conv2, conv3, fc


class FourLayerNet(nn.Module):
    """cuda-convnet's layers-80sec layout: conv-pool ×3, fully connected (§3.1's 4-layer net)."""

    def __init__(self, classes: int, activation: str, init: str = "kaiming"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.layers = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # (B,32,16,16)
            nn.Conv2d(32, 32, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,32,8,8)
            nn.Conv2d(32, 64, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,64,4,4)
            nn.Flatten(), nn.Linear(64 * 4 * 4, classes),  # (B, classes)
        )  # fmt: skip

        learned = [m for m in self.layers if isinstance(m, (nn.Conv2d, nn.Linear))]
        for layer, std in zip(learned, CUDA_CONVNET_STD, strict=True):  # the same for both
            if init == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.normal_(layer.weight, std=std)
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
    def from_source(cls, source: ImageSource, subset: int | None = None, seed: int = 0):
        """Every readable image, or a fixed subset of `subset` drawn with `seed`."""
        indices = range(len(source))
        if subset is not None and subset < len(source):  # the draw of data.train_subset
            indices = np.sort(np.random.default_rng(seed).permutation(len(source))[:subset])
        pictures, labels = [], []
        for index in map(int, indices):
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
    init: str = "kaiming",
    device: torch.device | str = "cpu",
) -> Curve:
    """SGD with momentum 0.9 and nothing else; the training error `checks_per_epoch` times an
    epoch. Stops early when the loss becomes NaN or infinite (diverged)."""
    torch.manual_seed(seed)
    model = FourLayerNet(int(data.labels.max()) + 1, activation, init).to(device)
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
    targets: Sequence[float],
    **options,
) -> tuple[float, dict[str, dict]]:
    """The learning rate that trains fastest: the fewest epochs to the lowest target any rate
    reaches in the sweep, else the lowest final error; and each rate's outcome."""
    outcomes = {}
    for lr in lrs:
        curve = train_curve(data, activation, lr, epochs=epochs, **options)
        reached = {} if curve.diverged else reached_targets(curve, targets)
        outcomes[f"{lr:g}"] = {
            "lr": lr,
            "diverged": curve.diverged,
            "epochs_to_targets": {key: value["epochs"] for key, value in reached.items()},
            "final_error": curve.errors[-1],
        }
    usable = [o for o in outcomes.values() if not o["diverged"]]
    if not usable:
        raise DataError(f"{activation}: every learning rate of the sweep diverged; try lower ones")
    for target in sorted(targets):  # the lowest target first
        reached = [o for o in usable if f"{target:g}" in o["epochs_to_targets"]]
        if reached:
            return min(reached, key=lambda o: o["epochs_to_targets"][f"{target:g}"])["lr"], outcomes
    return min(usable, key=lambda o: o["final_error"])["lr"], outcomes


def reached_targets(curve: Curve, targets: Sequence[float]) -> dict[str, dict[str, float]]:
    """{"0.25": {"epochs": e, "seconds": s}} for each target the curve reaches."""
    timed = {}
    for target in targets:
        point = curve.reaches(target)  # (epochs, seconds), or None
        if point is not None:
            timed[f"{target:g}"] = {"epochs": point[0], "seconds": point[1]}
    return timed


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
    targets: Sequence[float] = DEFAULT_TARGETS,
    batch_size: int = 128,
    seed: int = 0,
    init: str = "kaiming",
    train_subset: int | None = None,
    device: str = "auto",
) -> dict:
    """Sweep, train ReLU and tanh, write relu-vs-tanh.png, relu-vs-tanh.json and report.html;
    `out` is locked meanwhile (a second experiment there is turned away). The JSON keeps, for
    each activation, the epochs and seconds to each target it reached, and the tanh/ReLU ratio
    at each target; `target`, `epochs_to_target` and `ratio_epochs` are the first target's."""
    if init not in INITS:
        raise ValueError(f"init {init!r}: expected one of {', '.join(INITS)}")
    splits = open_source(source, seed=seed)
    with run_folder.lock_if_main(out):
        data = TrainingSet.from_source(splits.train, train_subset, seed)
        description = splits.description
        if train_subset is not None and len(data.labels) < len(splits.train):
            description += f"; trained on a fixed subset of {len(data.labels)} (seed {seed})"
        options = dict(batch_size=batch_size, seed=seed, init=init, device=resolve_device(device))
        result: dict = {"net": LAYOUT, "init": init, "data": description, "targets": targets}
        result["target"], curves = targets[0], {}
        for activation in ("relu", "tanh"):
            log.info("%s: sweeping learning rates %s", activation, ", ".join(map(str, lrs)))
            lr, outcomes = sweep(
                data, activation, lrs, epochs=sweep_epochs, targets=targets, **options
            )
            log.info("%s: learning rate %g; training %d epochs", activation, lr, epochs)
            curve = train_curve(data, activation, lr, epochs=epochs, **options)
            curves[activation] = (curve.epochs, curve.errors)
            result[activation] = _outcome(curve, lr, targets, outcomes)
        result["ratios"] = {
            key: _ratio(result, key, "epochs") for key in map("{:g}".format, targets)
        }
        result["ratio_epochs"] = result["ratios"][f"{targets[0]:g}"]
        result["ratio_seconds"] = _ratio(result, f"{targets[0]:g}", "seconds")
        plot_training_error(curves, out / "relu-vs-tanh.png", targets)
        write_text_atomically(out / "relu-vs-tanh.json", json.dumps(result, indent=2) + "\n")
        _write_report(result, out)
    return result


def _outcome(curve: Curve, lr: float, targets: Sequence[float], sweep_outcomes: dict) -> dict:
    reached = reached_targets(curve, targets)
    first = reached.get(f"{targets[0]:g}", {})
    return {
        "lr": lr,
        "reached": reached,
        "epochs_to_target": first.get("epochs"),
        "seconds_to_target": first.get("seconds"),
        "diverged": curve.diverged,
        "curve": {"epochs": curve.epochs, "seconds": curve.seconds, "errors": curve.errors},
        "sweep": sweep_outcomes,
    }


def _ratio(result: dict, target: str, unit: str) -> float | None:
    """tanh's epochs (or seconds) to `target` over ReLU's; None unless both reached it."""
    relu, tanh = (result[name]["reached"].get(target, {}).get(unit) for name in ("relu", "tanh"))
    return tanh / relu if relu and tanh else None


def _write_report(result: dict, out: Path) -> None:
    def cell(value, unit=""):
        return "not reached" if value is None else f"{value:.2f}{unit}"

    targets = [f"{target:g}" for target in result["targets"]]
    rows = [
        [f"{float(key):.0%}", *(cell(result[name]["reached"].get(key, {}).get("epochs"))
                                for name in ("relu", "tanh")), cell(result["ratios"][key], "×")]
        for key in targets
    ]  # fmt: skip
    lrs = f"learning rates: ReLU {result['relu']['lr']:g}, tanh {result['tanh']['lr']:g}"
    ratio = result["ratio_epochs"]
    summary = (
        f"tanh needs {ratio:.1f}× the epochs of ReLU to reach {result['target']:.0%} training "
        "error (the paper: six times, on CIFAR-10)."
        if ratio
        else "One of the nets did not reach the first target: train more epochs (--epochs)."
    )
    section = Section(
        "Figure 1: ReLU (solid) against tanh (dashed)",
        [summary, f"Net: {result['net']}; init {result['init']}; {lrs}. Data: {result['data']}."],
        Table(["training error", "ReLU epochs", "tanh epochs", "tanh / ReLU"], rows),
        [("relu-vs-tanh.png", out / "relu-vs-tanh.png")],
    )
    write_report(out / "report.html", "Experiment: ReLU against tanh (§3.1)", str(out), [section])
