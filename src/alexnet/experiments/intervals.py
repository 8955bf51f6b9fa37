"""95% intervals for the paper's claims: over seeds (Student's t), for ratios (t on their logs),
and over the images of a shared test set (a paired test per image, and McNemar's exact test).

Seeds pair runs (each seed trains both variants on the same split, order and draws); images
pair evaluations (every variant is tested on the same images), so a difference is measured
against the noise of the differences, not of the two error rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

Z_95 = 1.959964  # the normal's 97.5% quantile


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean and its 95% interval (Student's t); one value gives (mean, nan, nan)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float]):
    """The geometric mean of seed-paired ratios and its 95% interval, t on the logs (a ratio's
    noise is multiplicative: 2× and 0.5× are equally far from 1)."""
    logs = np.log(np.asarray(numerators, dtype=np.float64) / np.asarray(denominators))
    return tuple(math.exp(value) if math.isfinite(value) else math.nan
                 for value in t_interval(logs))  # fmt: skip


def per_image_difference(wrong: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """The error difference (wrong − reference, a fraction) and its 95% interval from a paired
    test over images: `wrong` and `reference` are (seeds, images) booleans on the same images;
    each image's difference is averaged over seeds, and the mean's standard error is that of
    the images' differences (a paired z test; McNemar's with one seed, in its normal form)."""
    images = np.shape(wrong)[-1]
    differences = np.asarray(wrong, np.float64).reshape(-1, images).mean(axis=0)
    differences -= np.asarray(reference, np.float64).reshape(-1, images).mean(axis=0)
    mean = float(differences.mean())
    half = Z_95 * differences.std(ddof=1) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def mcnemar(wrong: np.ndarray, reference: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on one pair of evaluations: (b, c, p) with b the images only
    `wrong` gets wrong, c those only `reference` gets wrong, p the two-sided binomial p-value
    of b against b + c discordant images at one half."""
    wrong, reference = np.asarray(wrong, bool), np.asarray(reference, bool)
    b, c = int((wrong & ~reference).sum()), int((~wrong & reference).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return b, c, p


def expected_half_width(seed_std: float, seeds: int, discordant: float, images: int):
    """The half-widths a design can resolve, before it runs: over seeds, t × the std of one
    seed's paired difference / √seeds; over images, z × √(discordant share / images) / √seeds
    (two nets disagreeing on that share of the images, each seed another such pair)."""
    by_seed = math.nan if seeds < 2 else float(stats.t.ppf(0.975, seeds - 1)) * seed_std
    by_image = Z_95 * math.sqrt(discordant / images)
    return by_seed / math.sqrt(max(seeds, 1)), by_image / math.sqrt(seeds)
