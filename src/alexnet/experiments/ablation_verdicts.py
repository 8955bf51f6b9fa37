"""What the ablations (§3.2-§4.2) can resolve and what they found: each ablation's difference to
the full net paired by seed and by test image (intervals.py), and a verdict against the paper's.

Before the ablations train, the full net's runs tell the design's resolution: the spread of its
error over seeds and the share of test images on which two of its seeds disagree give the
expected 95% half-width of a paired difference (`resolution`). A verdict takes the wider of the
two intervals (over seeds, over images): "reproduced" (the ablation is worse, as the paper
says), "reversed", "no effect larger than X points" (the interval holds 0 and excludes the
paper's effect) or "undecided" (it holds both 0 and the paper's effect).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from alexnet.analysis.report import Table
from alexnet.experiments.intervals import (
    expected_half_width,
    mcnemar,
    per_image_difference,
    t_interval,
)

DEFAULT_EFFECT = 1.0  # points: the size asked of rows where the paper gives no figure


def paired_difference(ablation: list[float], full: list[float]) -> tuple[float, float, float]:
    """The mean of the seed-paired differences ablation − full (each seed trains both on the
    same split, order and augmentation draws) and its 95% interval (Student's t); a single seed
    gives no interval (nan, nan)."""
    return t_interval(np.asarray(ablation) - np.asarray(full))


def resolution(full_top1: Sequence[float], full_wrong: np.ndarray) -> dict[str, float]:
    """The expected 95% half-widths (points) of an ablation's paired difference, from the full
    net's runs: over seeds, two nets' errors as far apart as the full net's seeds spread (√2 σ);
    over images, two nets disagreeing where two seeds of the full net do (one seed: where two
    nets with its error rate would, erring independently)."""
    seeds, images = np.shape(full_wrong)
    spread = math.sqrt(2) * float(np.std(full_top1, ddof=1)) if seeds > 1 else math.nan
    if seeds > 1:
        pairs = itertools.combinations(range(seeds), 2)
        discordant = float(np.mean([np.mean(full_wrong[i] != full_wrong[j]) for i, j in pairs]))
    else:
        error = float(np.mean(full_wrong))
        discordant = 2 * error * (1 - error)
    by_seed, by_image = expected_half_width(spread, seeds, discordant, images)
    return {"by_seed": 100 * by_seed, "by_image": 100 * by_image, "discordant": discordant,
            "seeds": seeds, "images": images}  # fmt: skip


def verdict(low: float, high: float, effect: float | None) -> str:
    """The verdict on an interval (points) of ablation − full; `effect`: the paper's (points)."""
    if math.isnan(low):
        return "undecided (one seed)"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "reversed"
    bound = max(-low, high)
    if bound < (effect or DEFAULT_EFFECT):
        return f"no effect larger than {math.ceil(10 * bound) / 10:.1f} points"
    return "undecided"


def compare(result: dict, full: dict, effect: float | None) -> dict:
    """One ablation against the full net: both intervals (points), the verdict, McNemar's
    test for each seed."""
    seed_mean, seed_low, seed_high = (100 * v for v in paired_difference(result["top1"],
                                                                       full["top1"]))  # fmt: skip
    wrong, reference = np.asarray(result["wrong"]), np.asarray(full["wrong"])
    image_mean, image_low, image_high = (100 * v for v in per_image_difference(wrong, reference))
    low, high = min(seed_low, image_low), max(seed_high, image_high)  # nan stays nan
    return {
        "seeds": [seed_mean, seed_low, seed_high],
        "images": [image_mean, image_low, image_high],
        "half_width": max(seed_high - seed_mean, image_high - image_mean),
        "verdict": verdict(low, high, effect),
        "mcnemar": [mcnemar(w, r) for w, r in zip(wrong, reference, strict=True)],
    }


def ablation_table(results: dict[str, dict]) -> Table:
    """Validation error, mean ± std over seeds; Δ top-1 (ablation − full) with its 95% intervals
    paired by seed and by image, the wider half-width, the verdict, Δ top-5."""

    def interval(values):
        mean, low, high = values
        return f"{mean:+.2f}" + ("" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")

    rows = []
    for name, result in results.items():
        cells = [name]
        for key in ("top1", "top5"):
            errors = 100 * np.array(result[key])
            cells.append(
                f"{errors.mean():.2f} ± {errors.std(ddof=1 if len(errors) > 1 else 0):.2f}"
            )
        comparison = result.get("comparison")
        if comparison is None:
            cells += ["—"] * 5
        else:
            cells += [interval(comparison["seeds"]), interval(comparison["images"]),
                      f"±{comparison['half_width']:.2f}", comparison["verdict"]]  # fmt: skip
            cells.append(
                f"{100 * (np.mean(result['top5']) - np.mean(results['full']['top5'])):+.2f}"
            )
        rows.append([*cells, result["paper"]])
    headers = ["ablation", "top-1 err", "top-5 err", "Δ top-1, seeds [95%]",
               "Δ top-1, images [95%]", "half-width", "verdict", "Δ top-5",
               "paper Δ top-1/top-5"]  # fmt: skip
    return Table(headers, rows)


def markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)
