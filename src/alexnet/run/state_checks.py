"""A checkpoint's training state, checked whole before a resume uses any of it (§5): the
optimizer against the parameters, the schedule against the recipe's, the generators' states,
the partial epoch and the best error. A damaged or tampered `last.pt` is one CheckpointError
line naming the field, never a traceback, a silent resume or a crash inside a kernel (torch's
fused SGD does not check a momentum buffer's shape)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

from alexnet.optim import PaperSGD, plateau_schedule
from alexnet.recipe import Recipe, shown
from alexnet.run.checkpoint import CheckpointError

PARTIAL_KEYS = ("loss", "top1_error", "images", "seconds", "skipped", "steps")  # mid-epoch
BUFFERS = ("momentum_buffer", "velocity")  # PaperSGD's state, or the paper's v (optim.py)
COUNTERS = ("last_epoch", "num_bad_epochs", "cooldown_counter")  # the schedule's whole numbers


class StateMismatch(ValueError):
    """What is wrong with one field; check_training_state adds the file's name."""


def check_training_state(saved: dict[str, Any], recipe: Recipe) -> None:
    """Raise CheckpointError unless every training-state entry of `saved` (checkpoint.load's,
    its model already checked to be a dict of tensors) has the type, shape and range a resume
    of `recipe` needs."""
    try:
        _check_optimizer(saved["optimizer"], list(saved["model"].values()), recipe)
        _check_schedule(saved["schedule"], recipe)
        generator_states(saved["rng"])
        _check_fraction("best_val_top1_error", saved["best_val_top1_error"], infinite=True)
        _check_partial(saved.get("partial"))
        _check_finished(saved.get("finished"))
    except StateMismatch as error:
        raise CheckpointError(f"{saved['path']} cannot be resumed: {error}") from None


def _check_optimizer(optimizer: Any, parameters: list[torch.Tensor], recipe: Recipe) -> None:
    if not isinstance(optimizer, dict) or set(optimizer) != {"state", "param_groups"}:
        raise StateMismatch("optimizer is not an optimizer's state (state, param_groups)")
    groups, state = optimizer["param_groups"], optimizer["state"]
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        raise StateMismatch("optimizer.param_groups is not one group of parameters")
    group = groups[0]
    if group.get("params") != list(range(len(parameters))):
        raise StateMismatch(f"optimizer's parameters are not the network's {len(parameters)}")
    for key in ("lr", "buffer_lr"):
        value = group.get(key, 1.0)  # buffer_lr is set at the first step
        if not _number(value) or not 0 < value < math.inf:
            raise StateMismatch(f"optimizer {key}={value!r} is not a number > 0")
    for key, expected in (("momentum", recipe.optim.momentum),
                          ("weight_decay", recipe.optim.weight_decay)):  # fmt: skip
        if group.get(key) != expected:
            raise StateMismatch(f"optimizer {key}={group.get(key)!r}, its recipe says {expected}")
    if not isinstance(state, dict):
        raise StateMismatch("optimizer.state is not a dictionary")
    for index, entry in state.items():
        if not isinstance(index, int) or not 0 <= index < len(parameters):
            raise StateMismatch(f"optimizer.state holds parameter {index!r}; the network has not")
        buffer = entry.get(BUFFERS[0], entry.get(BUFFERS[1])) if isinstance(entry, dict) else None
        if not isinstance(buffer, torch.Tensor) or len(entry) != 1:
            raise StateMismatch(f"optimizer.state[{index}] is not one momentum buffer")
        if buffer.shape != parameters[index].shape or not buffer.is_floating_point():
            raise StateMismatch(
                f"optimizer.state[{index}]'s momentum buffer is {buffer.dtype} "
                f"{tuple(buffer.shape)}, its parameter {tuple(parameters[index].shape)}"
            )


def _check_schedule(schedule: Any, recipe: Recipe) -> None:
    """The plateau schedule's settings are the recipe's (a resumed recipe keeps them); its
    counters are whole numbers >= 0, its best error a number and its rates > 0."""
    optimizer = PaperSGD([torch.zeros(1)], lr=recipe.optim.lr, momentum=recipe.optim.momentum)
    expected = plateau_schedule(
        optimizer,
        drop=recipe.schedule.lr_drop,
        patience=recipe.schedule.patience,
        max_drops=recipe.schedule.max_drops,
    ).state_dict()
    if not isinstance(schedule, dict):
        raise StateMismatch("schedule is not a schedule's state")
    unknown = sorted(map(str, set(schedule) - set(expected)))
    if unknown:
        raise StateMismatch(f"schedule holds entries a schedule has not: {', '.join(unknown)}")
    settings = set(expected) - {*COUNTERS, "best", "_last_lr"}
    for key in sorted(settings & set(schedule)):
        if schedule[key] != expected[key]:
            raise StateMismatch(
                f"schedule {key}={schedule[key]!r}, its recipe gives {expected[key]!r}"
            )
    for key in set(COUNTERS) & set(schedule):
        if not _whole(schedule[key]):
            raise StateMismatch(f"schedule {key}={schedule[key]!r} is not a whole number >= 0")
    if "best" in schedule:
        _check_fraction("schedule best", schedule["best"], infinite=True)
    rates = schedule.get("_last_lr", [recipe.optim.lr])
    if not isinstance(rates, list) or not all(_number(r) and 0 < r < math.inf for r in rates):
        raise StateMismatch(f"schedule _last_lr={rates!r} is not a list of rates > 0")


def generator_states(states: Any) -> tuple[torch.Tensor, tuple, tuple]:
    """The torch, numpy and Python generator states of a checkpoint's "rng", each tried on a
    generator of its own first (nothing global changes): raises on any that does not fit."""
    try:
        numpy = states["numpy"]
        torch_state = states["torch"]
        numpy_state = (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
        version, internal, gauss = states["python"]
        python_state = (version, tuple(internal), gauss)
        torch.Generator().set_state(torch_state)
        np.random.RandomState().set_state(numpy_state)
        random.Random().setstate(python_state)
        cuda = states.get("cuda", [])
        if not isinstance(cuda, list) or not all(isinstance(s, torch.Tensor) for s in cuda):
            raise TypeError("cuda is not a list of tensors")
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
            OverflowError) as error:  # fmt: skip
        raise StateMismatch(f"rng is not a set of generator states ({error})") from None
    return torch_state, numpy_state, python_state


def _check_partial(partial: Any) -> None:
    """The metrics of an epoch stopped midway (preemption.py): absent, or every key in range."""
    if partial is None:
        return
    if not isinstance(partial, dict) or set(partial) != set(PARTIAL_KEYS):
        raise StateMismatch(
            f"partial is not an epoch's partial metrics ({', '.join(PARTIAL_KEYS)})"
        )
    for key in ("images", "skipped", "steps"):
        if not _whole(partial[key]):
            raise StateMismatch(f"partial {key}={partial[key]!r} is not a whole number >= 0")
    for key in ("loss", "seconds"):
        if not _number(partial[key]) or not 0 <= partial[key] < math.inf:
            raise StateMismatch(f"partial {key}={partial[key]!r} is not a number >= 0")
    _check_fraction("partial top1_error", partial["top1_error"])


def _check_finished(finished: Any) -> None:
    """Why the schedule ended the run (printed as the resume's refusal): one line of text."""
    if finished is not None and not (isinstance(finished, str) and finished.isprintable()):
        raise StateMismatch(f"finished={shown(finished)} is not one line of text")


def _check_fraction(name: str, value: Any, *, infinite: bool = False) -> None:
    """An error rate in [0, 1]; `infinite`: or inf, before any epoch was validated."""
    if not _number(value) or not (0 <= value <= 1 or (infinite and value == math.inf)):
        raise StateMismatch(f"{name}={value!r} is not an error rate in [0, 1]")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
