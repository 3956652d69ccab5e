"""The report's statistics: rate intervals, the paired image − text gap, rank correlation and PCA reach.

Everything random here is seeded, so the same logs give the same report. The heavy lifting is scipy's:
``binomtest(...).proportion_ci`` (Wilson interval), ``bootstrap`` (paired gap), ``spearmanr`` and
``permutation_test`` (rank correlation and its p-value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Z_95 = float(stats.norm.ppf(0.975))
"""The two-sided 95 % normal quantile (1.95996...)."""
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PERMUTATION_RESAMPLES = 20000
"""Random permutations for Spearman's p-value; with n! at most this many (n ≤ 7) every permutation is used."""
PCA_TARGET = 0.9
MIN_CORRELATION_RUNS = 3

VsBase = Literal["above", "below", "no detectable difference"]


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (no continuity correction) of a binomial proportion ``successes / n``.

    Whole-number counts at the 95 % level go through ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``.
    A fractional count (a rate read back from logged metrics, times n) or another ``z`` uses the same closed
    form directly, since binomtest only takes whole counts. Returns (nan, nan) when ``n`` is 0.
    """
    if n <= 0:
        return math.nan, math.nan
    if float(successes).is_integer() and 0 <= successes <= n and z == Z_95:
        ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
        return float(ci.low), float(ci.high)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def compare_intervals(low: float, high: float, base_low: float, base_high: float) -> VsBase | None:
    """Where a rate's 95 % interval lies against the base's: wholly above, wholly below, or overlapping.

    Overlapping intervals are "no detectable difference" (a conservative reading, not a test of equality);
    None when either interval is unknown (no scored answers).
    """
    if not all(math.isfinite(x) for x in (low, high, base_low, base_high)):
        return None
    if low > base_high:
        return "above"
    if high < base_low:
        return "below"
    return "no detectable difference"


@dataclass(frozen=True)
class PairedGap:
    """Mean over items of (image − text) per-item rates, with a paired bootstrap 95 % interval."""

    gap: float
    low: float
    high: float
    n_items: int


def _mean_difference(image: np.ndarray, text: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(image - text, axis=axis)


def paired_gap(
    text: Mapping[str, Sequence[float]],
    image: Mapping[str, Sequence[float]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedGap | None:
    """Paired image − text gap over the items scored in both modalities.

    Each item's answers are first averaged over epochs in each modality; the gap is the mean over items of
    (image − text). Its interval is the percentile 95 % interval of ``scipy.stats.bootstrap`` with
    ``paired=True``: items are resampled with replacement, each keeping its text and image value together.

    Args:
        text: Per item id, the text answers' values (one per epoch; averaged per item first).
        image: The same for the image variant.
        resamples: Bootstrap resamples of items.
        seed: Seed of the resampling, so reports are reproducible.

    Returns:
        The gap and its interval, or None when no item has both modalities.
    """
    items = sorted(i for i in set(text) & set(image) if text[i] and image[i])
    if not items:
        return None
    image_means = np.array([np.mean(image[i]) for i in items], dtype=float)
    text_means = np.array([np.mean(text[i]) for i in items], dtype=float)
    gap = float(np.mean(image_means - text_means))
    if len(items) == 1:  # nothing to resample: the one item is the whole story
        return PairedGap(gap, gap, gap, 1)
    result = stats.bootstrap((image_means, text_means), _mean_difference, paired=True, vectorized=True,
                             n_resamples=resamples, method="percentile", confidence_level=0.95,
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return PairedGap(gap, float(low), float(high), len(items))


def _constant(values: Sequence[float]) -> bool:
    return len(set(float(v) for v in values)) <= 1


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``; ties get mean ranks).

    NaN with fewer than 2 points or when either side is constant (no ranking to correlate).
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2 or _constant(x) or _constant(y):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def permutation_p(x: Sequence[float], y: Sequence[float], *, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p-value of Spearman's rho under the null of no association, by permuting the pairing.

    ``scipy.stats.permutation_test`` with ``permutation_type="pairings"``, permuting the ranks of ``x`` against
    the fixed ranks of ``y``: exact (every one of the n! pairings) when n! is at most ``PERMUTATION_RESAMPLES``
    (up to 7 points), else that many seeded random pairings, where scipy counts the observed pairing as one
    of them (so p is never 0). Two-sided as the share of pairings whose |rho| is at least the observed |rho|
    (the test statistic is |rho|, one-sided "greater"), which stays right when ties make the null
    distribution of rho asymmetric. NaN where rho is.
    """
    rho = spearman(x, y)
    if math.isnan(rho):
        return math.nan
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    yc = ry - ry.mean()

    def abs_rho(permuted: np.ndarray, axis: int = -1) -> np.ndarray:
        # Pearson's r of ranks is Spearman's rho; permuting x's ranks leaves their mean and spread unchanged
        xc = permuted - np.mean(permuted, axis=axis, keepdims=True)
        return np.abs(np.sum(xc * yc, axis=axis) / np.sqrt(np.sum(xc * xc, axis=axis) * np.sum(yc * yc)))

    result = stats.permutation_test((rx,), abs_rho, permutation_type="pairings", vectorized=True,
                                    n_resamples=PERMUTATION_RESAMPLES, alternative="greater",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


def components_to_reach(ratios: Sequence[float], target: float = PCA_TARGET) -> int | None:
    """Smallest k whose first k explained-variance ratios sum to at least ``target`` (None if they never do)."""
    total = 0.0
    for k, ratio in enumerate(ratios, start=1):
        total += ratio
        if total >= target - 1e-9:
            return k
    return None
