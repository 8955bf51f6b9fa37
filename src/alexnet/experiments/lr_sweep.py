"""The learning rate of each Figure 1 net (§3.1): "chosen independently to make training as
fast as possible", from a sweep that is widened until the chosen rate lies inside it.

A rate's outcome is the fewest epochs to the lowest target any rate reaches, else its lowest
training error; a diverged rate loses to every other. When the best rate is the sweep's lowest
or highest, the next rate beyond it (one grid step further, the ratio of the two end rates) is
tried too, up to `widen` times; the sweep says whether its choice ended inside.
"""

from __future__ import annotations

from collections.abc import Sequence

from alexnet.data import DataError
from alexnet.experiments.curves import reached_targets, train_curve
from alexnet.experiments.training_set import TrainingSet


def _outcome(data: TrainingSet, kind: str, lr: float, epochs, targets, options) -> dict:
    curve = train_curve(data, kind, lr, epochs=epochs, **options)
    reached = {} if curve.diverged else reached_targets(curve, targets)
    return {
        "lr": lr,
        "diverged": curve.diverged,
        "epochs_to_targets": {key: value["epochs"] for key, value in reached.items()},
        "lowest_error": min(curve.errors),
    }


def best_rate(outcomes: list[dict], targets: Sequence[float]) -> dict | None:
    """The outcome that trains fastest; None when every rate diverged."""
    usable = [o for o in outcomes if not o["diverged"]]
    for target in sorted(targets):  # the lowest target first
        reached = [o for o in usable if f"{target:g}" in o["epochs_to_targets"]]
        if reached:
            return min(reached, key=lambda o: o["epochs_to_targets"][f"{target:g}"])
    return min(usable, key=lambda o: o["lowest_error"]) if usable else None


def sweep(
    data: TrainingSet,
    kind: str,
    lrs: Sequence[float],
    *,
    epochs: int,
    targets: Sequence[float],
    widen: int = 4,
    **options,
) -> tuple[float, dict]:
    """The fastest rate of the sweep, widened until it lies inside; and the sweep's record:
    each rate's outcome and whether the choice is inside (`inside`)."""
    outcomes = [_outcome(data, kind, lr, epochs, targets, options) for lr in sorted(set(lrs))]
    step = outcomes[-1]["lr"] / outcomes[0]["lr"] if len(outcomes) > 1 else 3.0
    step = step ** (1 / max(1, len(outcomes) - 1))
    for _ in range(widen):
        best = best_rate(outcomes, targets)
        if best is None or best is outcomes[0]:  # all diverged, or the lowest is best: go lower
            outcomes.insert(0, _outcome(data, kind, outcomes[0]["lr"] / step, epochs, targets,
                                        options))  # fmt: skip
        elif best is outcomes[-1]:
            outcomes.append(_outcome(data, kind, outcomes[-1]["lr"] * step, epochs, targets,
                                     options))  # fmt: skip
        else:
            break
    best = best_rate(outcomes, targets)
    if best is None:
        raise DataError(f"{kind}: every learning rate of the sweep diverged; try lower ones")
    inside = best is not outcomes[0] and best is not outcomes[-1]
    record = {"inside": inside, "rates": {f"{o['lr']:.3g}": o for o in outcomes}}
    return best["lr"], record
