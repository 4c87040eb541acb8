"""attprune.experiments.stats against an independent bootstrap, and the intervals' coverage.

The reference bootstrap below is written from the definition, not from stats.py: a resample
is how often each example (draw) is picked, a multinomial count vector, and a statistic is
then a weighted sum (stats.py indexes with random integers instead).  Different random
streams, so the two agree only up to Monte-Carlo error: the tolerance is a tenth of the
bootstrap standard error (about four Monte-Carlo standard deviations of the difference of two
2.5% quantiles from 20000 resamples each), plus one lattice step where the statistic can only
take values k / n; that is tight enough to tell a 90% interval from a 95% one.
"""

import numpy as np
import pytest

from attprune.experiments.stats import (draws_interval, mean_interval, mean_of_groups, paired_difference,
                                       paired_draws, pooled_draws)

B = 20000  # resamples, on both sides


def counts(rng, n, resamples=B):
    """[resamples, n]: how often each of n items is drawn in each resample (n draws with replacement)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)


def ref_ratio(values, totals, rng):
    """Bootstrap draws of sum(values) / sum(totals), whole examples resampled."""
    c = counts(rng, len(values))
    return (c @ values) / (c @ totals)


def ref_two_level(m, rng):
    """Bootstrap draws of the mean of m [draws, examples], both levels resampled independently:
    entry (d, e) appears (times d drawn) x (times e drawn) in a resampled matrix."""
    n_draws, n_examples = m.shape
    per_draw, per_example = counts(rng, n_draws), counts(rng, n_examples)
    return ((per_draw @ m) * per_example).sum(1) / (n_draws * n_examples)


def ends(draws, level=0.95):
    tail = (1 - level) / 2
    return np.quantile(draws, tail), np.quantile(draws, 1 - tail)


def assert_agrees(interval, draws, value, level=0.95, step=0.0):
    low, high = ends(draws, level)
    tol = 0.1 * draws.std() + step
    assert interval.value == pytest.approx(value, abs=1e-12)
    assert interval.low == pytest.approx(low, abs=tol), (interval, low, high, tol)
    assert interval.high == pytest.approx(high, abs=tol), (interval, low, high, tol)
    # the check can tell the levels apart: the other level's ends are further off than tol
    other = ends(draws, 0.9 if level == 0.95 else 0.95)
    assert abs(other[0] - low) > tol or abs(other[1] - high) > tol


def correctness(rng, n, p):
    return (rng.random(n) < p).astype(float)


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_mean_interval_equals_a_reference_bootstrap(level):
    rng = np.random.default_rng(0)
    values = correctness(rng, 300, 0.7)
    got = mean_interval(values, level=level, resamples=B, seed=1)
    assert_agrees(got, ref_ratio(values, np.ones(300), rng), values.mean(), level, step=1 / 300)
    smooth = rng.random(300)  # per-example values on a continuum: no lattice allowance
    got = mean_interval(smooth, level=level, resamples=B, seed=2)
    assert_agrees(got, ref_ratio(smooth, np.ones(300), rng), smooth.mean(), level)


def test_mean_interval_with_totals_equals_a_reference_cluster_bootstrap():
    """Token tasks: correct tokens / labelled tokens, whole sentences resampled."""
    rng = np.random.default_rng(1)
    totals = rng.integers(1, 30, 300).astype(float)
    values = rng.binomial(totals.astype(int), rng.beta(6, 3, 300)).astype(float)
    got = mean_interval(values, totals=totals, resamples=B, seed=3)
    assert_agrees(got, ref_ratio(values, totals, rng), values.sum() / totals.sum())


def test_paired_difference_equals_a_reference_paired_bootstrap():
    rng = np.random.default_rng(2)
    a = correctness(rng, 300, 0.72)
    b = np.where(rng.random(300) < 0.2, 1 - a, a)  # the same examples, a fifth of them flipped
    got = paired_difference(a, b, resamples=B, seed=4)
    assert_agrees(got, ref_ratio(a - b, np.ones(300), rng), a.mean() - b.mean(), step=1 / 300)


def test_mean_of_groups_equals_a_reference_stratified_bootstrap():
    """The mean of each group's ratio, every group resampled on its own (one of them with totals)."""
    rng = np.random.default_rng(3)
    a = correctness(rng, 300, 0.6) - correctness(rng, 300, 0.5)
    totals = rng.integers(1, 20, 250).astype(float)
    b = rng.binomial(totals.astype(int), 0.8).astype(float) - rng.binomial(totals.astype(int), 0.75)
    got = mean_of_groups([(a, None), (b, totals)], resamples=B, seed=5)
    draws = (ref_ratio(a, np.ones(300), rng) + ref_ratio(b, totals, rng)) / 2
    assert_agrees(got, draws, (a.mean() + b.sum() / totals.sum()) / 2, step=1 / 600)


def draw_matrix(rng, n_draws, n_examples, p=0.7, spread=0.08):
    """0/1 correctness [draws, examples]: each draw's pruned model a little better or worse."""
    offsets = spread * rng.standard_normal((n_draws, 1))
    return (rng.random((n_draws, n_examples)) < p + offsets).astype(float)


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_draws_interval_equals_a_reference_two_level_bootstrap(level):
    rng = np.random.default_rng(4)
    m = draw_matrix(rng, 6, 120)
    got = draws_interval(m, level=level, resamples=B, seed=6)
    assert_agrees(got, ref_two_level(m, rng), m.mean(), level, step=1 / m.size)


def test_paired_draws_equals_a_reference_two_level_bootstrap_of_the_differences():
    rng = np.random.default_rng(5)
    a, b = draw_matrix(rng, 6, 120), draw_matrix(rng, 6, 120, p=0.62)
    got = paired_draws(a, b, resamples=B, seed=7)
    assert_agrees(got, ref_two_level(a - b, rng), a.mean() - b.mean(), step=1 / a.size)
    one = draw_matrix(rng, 1, 120, p=0.6, spread=0)  # a data-free method: one row, against every draw
    got = paired_draws(a, one, resamples=B, seed=8)
    assert_agrees(got, ref_two_level(a - one, rng), a.mean() - one.mean(), step=1 / a.size)


def test_pooled_draws_equals_a_reference_stratified_two_level_bootstrap():
    rng = np.random.default_rng(6)
    first = draw_matrix(rng, 6, 120) - draw_matrix(rng, 6, 120, p=0.65)
    second = draw_matrix(rng, 6, 90, p=0.8) - draw_matrix(rng, 6, 90, p=0.78)
    got = pooled_draws([first, second], resamples=B, seed=9)
    draws = (ref_two_level(first, rng) + ref_two_level(second, rng)) / 2
    assert_agrees(got, draws, (first.mean() + second.mean()) / 2, step=1 / first.size)


# -- coverage ------------------------------------------------------------------------------


def test_95_and_90_percent_intervals_cover_as_often_as_they_say():
    """3000 datasets of 150 per-example values with a known mean: the 95% interval covers it
    in [0.93, 0.97] of them, the 90% one in [0.87, 0.93] (binomial standard error of a
    coverage from 3000 datasets: 0.004 and 0.0055).  A percentile bootstrap's intervals are a
    little short at n = 150 (the plug-in variance, normal rather than t quantiles: about
    0.945 and 0.895 with many resamples; 400 resamples cost about 0.005 more)."""
    rng = np.random.default_rng(11)
    datasets, n, resamples = 3000, 150, 400
    covered = {0.95: 0, 0.9: 0}
    for i in range(datasets):
        values = rng.random(n)  # true mean 0.5
        for level in covered:
            interval = mean_interval(values, level=level, resamples=resamples, seed=2 * i + (level == 0.9))
            covered[level] += interval.low <= 0.5 <= interval.high
    c95, c90 = covered[0.95] / datasets, covered[0.9] / datasets
    assert 0.93 <= c95 <= 0.97, c95
    assert 0.87 <= c90 <= 0.93, c90
    assert c95 - c90 > 0.03, (c95, c90)


def test_two_level_intervals_cover_a_draw_effect_that_examples_alone_miss():
    """Values = 0.5 + a per-draw offset (sd 0.3) + a per-example effect shared by the draws (sd
    0.3) + noise (sd 0.3), 10 draws x 60 examples: most of the grand mean's variance is the
    draws'.  Bootstrapping the examples of the draw-averaged values ignores it and covers the
    true mean in only ~55% of 1500 datasets.  draws_interval resamples the draws too and covers
    it in ~91%: better, but not 95%.  With 10 draws the draw variance is estimated from 10
    numbers (the plug-in (D - 1) / D, normal rather than t_9 quantiles: P(|t_9| <= 1.96
    sqrt(0.9)) ~ 0.91); more draws, not more resamples, close that gap."""
    rng = np.random.default_rng(12)
    datasets, n_draws, n_examples, resamples = 1500, 10, 60, 400
    examples_only, two_level = 0, 0
    for i in range(datasets):
        m = (0.5 + 0.3 * rng.standard_normal((n_draws, 1)) + 0.3 * rng.standard_normal((1, n_examples))
             + 0.3 * rng.standard_normal((n_draws, n_examples)))
        flat = mean_interval(m.mean(0), resamples=resamples, seed=i)
        both = draws_interval(m, resamples=resamples, seed=i)
        examples_only += flat.low <= 0.5 <= flat.high
        two_level += both.low <= 0.5 <= both.high
    examples_only, two_level = examples_only / datasets, two_level / datasets
    assert examples_only < 0.7, examples_only
    assert 0.87 <= two_level <= 0.94, two_level  # honest: short of 95% with 10 draws
    assert two_level - examples_only > 0.25


# -- pairing -------------------------------------------------------------------------------


def test_pairing_narrows_the_interval_of_strongly_correlated_methods():
    """Two methods right and wrong on mostly the same examples (they disagree on 6%): the
    paired interval of the difference is a fraction of what two independent intervals give,
    and its width is what the spread of the per-example differences says."""
    rng = np.random.default_rng(13)
    n = 400
    a = correctness(rng, n, 0.7)
    b = np.where(rng.random(n) < 0.06, 1 - a, a)
    paired = paired_difference(a, b, resamples=B, seed=1)
    ia, ib = mean_interval(a, resamples=B, seed=2), mean_interval(b, resamples=B, seed=3)
    unpaired = np.hypot(ia.high - ia.low, ib.high - ib.low)  # the width of the difference if a, b were independent
    assert (paired.high - paired.low) / unpaired < 0.5
    expected = 2 * 1.96 * (a - b).std() / np.sqrt(n)
    assert (paired.high - paired.low) == pytest.approx(expected, rel=0.1)
    # an unpaired bootstrap of the same difference (a and b resampled apart) is as wide as the rule says
    independent = ref_ratio(a, np.ones(n), rng) - ref_ratio(b, np.ones(n), rng)
    low, high = ends(independent)
    assert (high - low) == pytest.approx(unpaired, rel=0.1)
