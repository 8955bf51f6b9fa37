"""Learning (§5): the paper's SGD update and its plateau schedule for the learning rate.

The paper writes momentum with the learning rate ε inside the velocity:

    v ← 0.9·v − 0.0005·ε·w − ε·⟨∂L/∂w⟩
    w ← w + v

`torch.optim.SGD` keeps ε outside (v ← 0.9·v + g + 0.0005·w; w ← w − ε·v). While ε is constant
the two give the same weights; when ε drops, torch's form shrinks the velocity already built up
at once, while the paper's lets it decay through the momentum. `PaperSGD` is the paper's form.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay exactly as §5 writes it (ε inside the velocity)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0005,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; "
                f"got lr={lr}, momentum={momentum}, weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                state = self.state[weight]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(weight)
                velocity = state["velocity"]
                velocity.mul_(momentum).add_(weight, alpha=-weight_decay * lr)
                velocity.add_(weight.grad, alpha=-lr)
                weight.add_(velocity)
        return loss


def plateau_schedule(
    optimizer: torch.optim.Optimizer, *, drop: float, patience: int, max_drops: int
) -> ReduceLROnPlateau:
    """§5: divide ε by `drop` when validation error has not improved, at most `max_drops` times.

    `patience` epochs without improvement are tolerated; the next one drops ε (torch's meaning).
    The cap is a floor at ε₀ / drop^max_drops: once there, a further drop would change nothing.
    """
    initial = [group["lr"] for group in optimizer.param_groups]
    floors = [lr / drop**max_drops for lr in initial]
    return ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=1 / drop,
        patience=patience,
        threshold=0.0,
        min_lr=floors,
        eps=min(initial) * 1e-6 / drop**max_drops,
    )


def plateau_ends_run(schedule: torch.optim.lr_scheduler.ReduceLROnPlateau, error: float) -> bool:
    """§5: "reduced three times prior to termination": at the lowest ε, with this (not yet
    stepped) error the schedule would see a plateau that calls for another drop."""
    at_floor = all(
        group["lr"] <= floor * (1 + 1e-6)
        for group, floor in zip(schedule.optimizer.param_groups, schedule.min_lrs, strict=True)
    )
    plateau = not error < schedule.best  # plateau_schedule: mode "min", threshold 0
    return at_floor and plateau and schedule.num_bad_epochs + 1 > schedule.patience
