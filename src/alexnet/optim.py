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
    """SGD with momentum and weight decay exactly as §5 writes it (ε inside the velocity).

    It runs as torch's fused SGD kernel (one pass over weights, gradients and buffers) on the
    buffer b = −v/ε: b ← 0.9·b + (∂L/∂w + 0.0005·w), w ← w − ε·b is the paper's rule term for
    term while ε holds. When ε changes the paper keeps v, so the next step rescales every
    buffer by ε_old/ε_new, inside the fused pass as a momentum of 0.9·ε_old/ε_new: a pass of
    its own would cost every step where a warm-up or a linear fall changes ε
    (docs/measurements.md, "Training step on the CPU"). torch's own SGD keeps b instead: the
    difference is tested in tests/test_optim.py. The state holds b ("momentum_buffer") and, per
    group, the ε it is scaled for ("buffer_lr"): v = −buffer_lr·b. A state with the paper's
    "velocity" loads too.
    """

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
        self.register_load_state_dict_pre_hook(_velocity_to_buffer)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rescale = self._keep_velocity_across_lr_change(group)
            weights = [w for w in group["params"] if w.grad is not None]
            by_device_and_dtype: dict[tuple, list[torch.Tensor]] = {}
            for weight in weights:
                by_device_and_dtype.setdefault((weight.device, weight.dtype), []).append(weight)
            for same in by_device_and_dtype.values():
                torch._fused_sgd_(
                    same,
                    [w.grad for w in same],
                    [self._buffer(w) for w in same] if group["momentum"] else [],  # none at 0
                    weight_decay=group["weight_decay"],
                    momentum=group["momentum"] * rescale,  # b ← 0.9·(rescale·b) + ...
                    lr=group["lr"],
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    is_first_step=False,  # buffers start at zero: 0.9·0 + g is the first step
                )
        return loss

    def _keep_velocity_across_lr_change(self, group: dict) -> float:
        """ε_old/ε_new, by which this step rescales the group's buffers (1 while ε holds): the
        buffers of weights it steps in the fused pass (its momentum times the factor), the
        others here."""
        scaled_for = group.setdefault("buffer_lr", group["lr"])
        if scaled_for == group["lr"]:
            return 1.0
        rescale = scaled_for / group["lr"]
        idle = [
            self.state[w]["momentum_buffer"]
            for w in group["params"]
            if w.grad is None and w in self.state
        ]
        if idle:
            torch._foreach_mul_(idle, rescale)
        group["buffer_lr"] = group["lr"]
        return rescale

    def _buffer(self, weight: torch.Tensor) -> torch.Tensor:
        state = self.state[weight]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(weight)
        return state["momentum_buffer"]


def _velocity_to_buffer(optimizer: PaperSGD, state_dict: dict) -> None:
    """A state saved with the paper's velocity v (no "momentum_buffer"): b = −v/ε."""
    for group in state_dict["param_groups"]:
        for index in group["params"]:
            state = state_dict["state"].get(index, {})
            if "velocity" in state:
                state["momentum_buffer"] = state.pop("velocity") / -group["lr"]
                group["buffer_lr"] = group["lr"]


class StepRate:
    """ε set before each step, for what the plateau schedule does not do (neither is in the
    paper, §5): a linear rise over the run's first `warmup` steps, ε·s/warmup at step s, and
    with `total` steps a linear fall after it, to ε/(total − warmup) at the last step.

    On small data the first steps at full ε overshoot: the digits recipe's loss went from 4.6
    to 7.8 on step 2 and then sat near chance (2.30) for most of the epoch. And a run of a few
    epochs has no plateau for the schedule to see: the fall gives it the small steps at the end
    that a drop gives a long run (recipe.py). ε is a function of the step alone, so a resumed
    run gets the same; PaperSGD keeps the velocity across each change, as at a drop. Without
    `total` the plateau schedule owns ε after the warm-up, which then lies within epoch 1.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, lr: float, warmup: int, total: int | None = None
    ):
        self.optimizer, self.lr, self.warmup, self.total = optimizer, lr, warmup, total

    def before_step(self, step: int) -> None:
        """Set ε for the run's `step`-th step (from 1)."""
        if step <= self.warmup:
            factor = step / self.warmup
        elif self.total is not None:
            factor = (self.total - step + 1) / (self.total - self.warmup)
        else:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor


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
