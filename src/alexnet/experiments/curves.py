"""Figure 1's curves (§3.1): training error against epochs, with what the units do meanwhile.

Each net trains by one loop, SGD with momentum 0.9 and nothing else (no weight decay, dropout,
LRN or augmentation, as in the paper). Training error is measured on a fixed sample of at most
1,000 training images, `checks_per_epoch` times per epoch; the epoch (and the training seconds)
at which it first reaches a level is interpolated linearly between checks. At each check the
same pass records each learned layer's pre-activation std (its scale, read at initialisation)
and, for tanh units, the fraction saturated (|tanh| > 0.95, where its slope is under 0.1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.experiments.four_layer_net import build_net
from alexnet.experiments.training_set import TrainingSet

PROBE_IMAGES = 1_000  # a fixed sample of training images on which training error is measured
SATURATED = 0.95  # |tanh(x)| above it: slope 1 - tanh² below 0.1


@dataclass
class Curve:
    """Training error against epochs (and training seconds) of one net at one learning rate;
    per check, each tanh layer's saturated fraction; each learned layer's pre-activation std
    at initialisation."""

    epochs: list[float]
    seconds: list[float]
    errors: list[float]
    diverged: bool = False
    saturated: list[list[float]] = field(default_factory=list)  # per check, per tanh layer
    preactivation_std: list[float] = field(default_factory=list)  # per learned layer, at init

    def reaches(self, target: float) -> tuple[float, float] | None:
        """(epochs, seconds) at which the error first reaches `target`, interpolated."""
        points = list(zip(self.epochs, self.seconds, self.errors, strict=True))
        for (e0, s0, err0), (e1, s1, err1) in zip(points, points[1:], strict=False):
            if err1 <= target:
                share = (err0 - target) / (err0 - err1) if err0 > target else 0.0
                return e0 + share * (e1 - e0), s0 + share * (s1 - s0)
        return None

    def saturated_first_epoch(self) -> list[float]:
        """Each tanh layer's saturated fraction, averaged over the checks of epochs 0-1."""
        within = [s for e, s in zip(self.epochs, self.saturated, strict=False) if e <= 1.0]
        return [sum(layer) / len(within) for layer in zip(*within, strict=True)] if within else []


class UnitStatistics:
    """Forward hooks that count, over one probe pass, each learned layer's pre-activation
    moments and each tanh layer's saturated outputs."""

    def __init__(self, model: nn.Module):
        self.learned = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.tanh = [m for m in model.modules() if isinstance(m, nn.Tanh)]
        self.handles = [m.register_forward_hook(self._moments) for m in self.learned]
        self.handles += [m.register_forward_hook(self._saturation) for m in self.tanh]
        self.reset()

    def reset(self) -> None:
        self.sums = {m: np.zeros(3) for m in self.learned + self.tanh}  # per module, see below

    def _moments(self, module, inputs, output) -> None:  # Σx, Σx², count
        values = output.detach().double()
        self.sums[module] += [values.sum().item(), values.square().sum().item(), values.numel()]

    def _saturation(self, module, inputs, output) -> None:  # saturated count, -, count
        self.sums[module] += [(output.detach().abs() > SATURATED).sum().item(), 0, output.numel()]

    def stds(self) -> list[float]:
        return [math.sqrt(max(0.0, s2 / n - (s1 / n) ** 2))
                for s1, s2, n in (self.sums[m] for m in self.learned)]  # fmt: skip

    def saturated(self) -> list[float]:
        return [float(self.sums[m][0] / self.sums[m][2]) for m in self.tanh]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def training_error(
    model: nn.Module, data: TrainingSet, probe: torch.Tensor, device, units: UnitStatistics
) -> float:
    """The error on the probe images; `units` counts the same pass."""
    model.eval()
    units.reset()
    wrong = 0
    for chunk in probe.split(1000):
        images, labels = data.batch(chunk, device)
        wrong += int((model(images).argmax(dim=1) != labels).sum())
    model.train()
    return wrong / len(probe)


def train_curve(
    data: TrainingSet,
    kind: str,
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
    epoch. `kind`: "relu", "tanh" or "linear". Stops when the loss is no longer finite."""
    torch.manual_seed(seed)
    model = build_net(kind, int(data.labels.max()) + 1, init).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randperm(len(data.labels), generator=generator)[:PROBE_IMAGES]
    steps = math.ceil(len(data.labels) / batch_size)
    check_at = {round(steps * (c + 1) / checks_per_epoch) for c in range(checks_per_epoch)}
    units = UnitStatistics(model)
    curve = Curve([0.0], [0.0], [training_error(model, data, probe, device, units)])
    curve.preactivation_std, curve.saturated = units.stds(), [units.saturated()]
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
                    units.close()
                    return curve
                trained_seconds += time.perf_counter() - start
                curve.epochs.append(epoch + step / steps)
                curve.seconds.append(trained_seconds)
                curve.errors.append(training_error(model, data, probe, device, units))
                curve.saturated.append(units.saturated())
                start = time.perf_counter()
    units.close()
    return curve


def reached_targets(curve: Curve, targets: Sequence[float]) -> dict[str, dict[str, float]]:
    """{"0.25": {"epochs": e, "seconds": s}} for each target the curve reaches."""
    timed = {}
    for target in targets:
        point = curve.reaches(target)  # (epochs, seconds), or None
        if point is not None:
            timed[f"{target:g}"] = {"epochs": point[0], "seconds": point[1]}
    return timed
