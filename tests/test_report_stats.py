"""Table tests of the report's statistics (em_tasks.study.report.stats) against values known by hand."""

from __future__ import annotations

import math

import pytest

from em_tasks.study.report.stats import (
    Z_95,
    compare_intervals,
    components_to_reach,
    paired_gap,
    permutation_p,
    spearman,
    wilson_interval,
)


def closed_form_wilson(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        (0, 10, 0.0, 0.27753),  # nothing seen: the interval still reaches past a quarter
        (10, 10, 0.72247, 1.0),  # the mirror image
        (5, 10, 0.23659, 0.76341),  # symmetric around one half
        (0, 1, 0.0, 0.79346),
        (1, 100, 0.00177, 0.05449),
        (50, 100, 0.40383, 0.59617),
    ],
    ids=["0/10", "10/10", "5/10", "0/1", "1/100", "50/100"],
)
def test_wilson_interval_known_values(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-5)


@pytest.mark.parametrize("successes, n", [(2.5, 7), (0.4, 3), (13.75, 20)])
def test_wilson_interval_of_a_fractional_count_uses_the_same_formula(successes, n):
    low, high = wilson_interval(successes, n)
    assert (low, high) == pytest.approx(closed_form_wilson(successes, n))
    assert low < successes / n < high


@pytest.mark.parametrize("successes, n", [(0, 10), (3, 10), (7, 40), (40, 40)])
def test_wilson_interval_whole_counts_agree_with_the_closed_form(successes, n):
    assert wilson_interval(successes, n) == pytest.approx(closed_form_wilson(successes, n), abs=1e-12)


def test_wilson_interval_of_no_answers_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


@pytest.mark.parametrize(
    "interval, base, verdict",
    [
        ((0.5, 0.7), (0.1, 0.3), "above"),
        ((0.0, 0.1), (0.2, 0.4), "below"),
        ((0.2, 0.5), (0.4, 0.6), "no detectable difference"),
        ((0.2, 0.4), (0.4, 0.6), "no detectable difference"),  # touching intervals overlap
        ((math.nan, math.nan), (0.1, 0.3), None),
    ],
)
def test_compare_intervals(interval, base, verdict):
    assert compare_intervals(*interval, *base) == verdict


@pytest.mark.parametrize(
    "x, y, rho",
    [
        ([1, 2, 3, 4, 5], [2, 4, 8, 16, 32], 1.0),  # monotone increasing
        ([1, 2, 3, 4, 5], [9, 7, 5, 3, 1], -1.0),  # monotone decreasing
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),  # one swapped pair: 1 - 6*2 / (4*15)
        ([1, 2, 2, 3], [1, 2, 3, 4], 0.9486833),  # ties take their mean rank
        ([0.1, 0.5], [3.0, 1.0], -1.0),  # two points: always ±1
    ],
)
def test_spearman_known_values(x, y, rho):
    assert spearman(x, y) == pytest.approx(rho)


@pytest.mark.parametrize("x, y", [([1], [2]), ([1, 2, 3], [5, 5, 5]), ([4, 4, 4], [1, 2, 3]), ([], [])])
def test_spearman_is_nan_without_a_ranking(x, y):
    assert math.isnan(spearman(x, y))
    assert math.isnan(permutation_p(x, y))


def test_spearman_needs_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2])


@pytest.mark.parametrize(
    "x, y, p",
    [
        ([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], 2 / 120),  # exact: only the identity and its reverse reach |rho| = 1
        ([1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], 2 / 5040),
        ([1, 2, 3], [1, 3, 2], 1.0),  # each of the 6 pairings has |rho| >= 0.5
    ],
)
def test_permutation_p_is_exact_for_few_points(x, y, p):
    assert permutation_p(x, y) == pytest.approx(p)


def test_permutation_p_is_small_for_a_clear_association_and_large_for_none():
    x = list(range(20))
    clear = [v + (0.5 if v % 2 else -0.5) for v in x]  # monotone up to neighbour swaps
    assert spearman(x, clear) > 0.9
    assert permutation_p(x, clear) < 0.001
    none = [5, 17, 2, 11, 8, 19, 0, 14, 6, 12, 3, 16, 9, 1, 18, 7, 13, 4, 10, 15]
    assert abs(spearman(x, none)) < 0.2
    assert permutation_p(x, none) > 0.3


def test_permutation_p_of_many_points_is_seeded_and_never_zero():
    x = list(range(30))
    p = permutation_p(x, x)
    assert 0 < p < 1e-3  # the observed pairing counts as one of the resamples
    assert permutation_p(x, x) == p
    assert permutation_p(x, x, seed=1) == pytest.approx(p)


def test_paired_gap_interval_contains_the_true_difference_of_a_clear_case():
    # image is text + 0.3 on every item, plus item noise that averages out to zero
    noise = [0.05, -0.05, 0.1, -0.1, 0.0] * 8
    text = {f"q{k}": [0.2 + 0.01 * (k % 7)] for k in range(40)}
    image = {f"q{k}": [0.5 + 0.01 * (k % 7) + noise[k]] for k in range(40)}
    gap = paired_gap(text, image)
    assert gap is not None and gap.n_items == 40
    assert gap.gap == pytest.approx(0.3)
    assert gap.low < 0.3 < gap.high
    assert gap.high - gap.low < 0.05
    assert gap.low > 0


def test_paired_gap_of_no_difference_straddles_zero():
    text = {f"q{k}": [k % 2, (k + 1) % 2] for k in range(20)}
    image = {f"q{k}": [(k // 2) % 2] for k in range(20)}
    gap = paired_gap(text, image)
    assert gap.gap == pytest.approx(0.0)
    assert gap.low < 0 < gap.high


def test_paired_gap_of_one_shared_item_is_a_point():
    gap = paired_gap({"a": [0, 1], "b": [1]}, {"a": [1, 1]})
    assert (gap.gap, gap.low, gap.high, gap.n_items) == (0.5, 0.5, 0.5, 1)


def test_paired_gap_is_reproducible_and_depends_on_the_seed_only():
    text = {f"q{k}": [k % 3 == 0] for k in range(25)}
    image = {f"q{k}": [k % 2 == 0] for k in range(25)}
    assert paired_gap(text, image) == paired_gap(text, image)
    assert paired_gap(text, image, seed=3).gap == paired_gap(text, image).gap


@pytest.mark.parametrize(
    "ratios, target, k",
    [([0.6, 0.25, 0.1, 0.05], 0.9, 3), ([0.95, 0.05], 0.9, 1), ([0.5, 0.2], 0.9, None), ([0.3] * 3, 0.9, 3),
     ([], 0.9, None)],
)
def test_components_to_reach(ratios, target, k):
    assert components_to_reach(ratios, target) == k
