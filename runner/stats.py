"""The statistics of a comparison: intervals of means and of differences, the tests behind
the verdicts with Holm's correction, effect sizes, ranks shared by groups the data cannot
tell apart, power, a tuned key chosen on validation, and how fast a curve gets somewhere.

Plain functions over numpy arrays and pandas DataFrames, with no MLflow in sight:
``runner.compare`` reads the runs and hands their numbers here. docs/statistics.md says
which method is used when, and why.

- Intervals are 95%: Student t below :data:`BOOTSTRAP_FROM` values, a percentile bootstrap
  (:data:`RESAMPLES` resamples, seed :data:`SEED`) from there on; none below :data:`MIN_N`.
  A metric bounded to ``bounds`` (an accuracy, a fraction) has its intervals clipped there.
- A difference's test matches its interval (paired or Welch t; the bootstrap's own
  p-value), unless its values are too few to spread (:data:`DISTINCT`): then an exact sign
  or permutation test decides. ``test=WILCOXON`` takes rank tests instead.
- The verdicts of one table are Holm-adjusted together, at the 5% level.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
LEVEL = 1 - ALPHA
POWER = 0.8
MIN_N = 3
# From this many values (pairs, or runs on each side) the bootstrap replaces Student t.
BOOTSTRAP_FROM = 10
RESAMPLES = 9_999
SEED = 0
# Below this many resamples past 0, a bootstrap p-value is read off the normal
# approximation to the resamples rather than counted.
TAIL = 10
# Metrics are compared on this many significant digits: a float32 metric carries about 7,
# and the 7th is rounding noise (669/720 logs as 0.929166704 in one run, 0.929166675 in
# another), which would otherwise rank equal results apart.
DIGITS = 6
FEW = f"n < {MIN_N}"

STUDENT = "Student t"
BOOTSTRAP = "percentile bootstrap"
# The distinct values a method needs: a t interval needs a spread; the bootstrap, values
# enough that its resamples do not pile onto the observed extremes (from two values it
# can only draw a binomial lattice of means).
DISTINCT = {STUDENT: 2, BOOTSTRAP: 3}

# --test: differences of means (t or bootstrap), or rank tests.
MEAN = "mean"
WILCOXON = "wilcoxon"
TESTS = (MEAN, WILCOXON)

PAIRED_T = "paired t"
WELCH = "Welch t"
PAIRED_BOOTSTRAP = "paired bootstrap"
UNPAIRED_BOOTSTRAP = "bootstrap"
SIGN = "sign test"
PERMUTATION = "permutation test"
SIGNED_RANK = "Wilcoxon signed-rank"
RANK_SUM = "Mann–Whitney U"
# The effect size beside each test: a standardized mean difference (paired: d_z, the mean
# difference over the differences' sd; unpaired: Cohen's d over the two variances'
# average) or the rank-biserial correlation r. Each has the sign of ``group − other``.
EFFECT = {
    PAIRED_T: "d_z",
    PAIRED_BOOTSTRAP: "d_z",
    WELCH: "d",
    UNPAIRED_BOOTSTRAP: "d",
    SIGN: "r",
    PERMUTATION: "r",
    SIGNED_RANK: "r",
    RANK_SUM: "r",
}

BEST = "best"
TIED = "tied with the best"
WORSE = "worse than the best"
# Possible with a rank test only: a group behind on its mean, ahead on its ranks.
AHEAD_BY_RANKS = "ahead by ranks, behind by mean"
# The verdicts of a pair, ``other`` against ``group``.
PAIRED_VERDICT = {FEW: FEW, TIED: "tied", WORSE: "worse", AHEAD_BY_RANKS: "ahead by ranks"}
VERSUS = ("diff", "diff_low", "diff_high", "test", "effect", "p", "p_holm", "verdict")


class Interval(NamedTuple):
    """An estimate and its 95% confidence interval; ``low`` and ``high`` are NaN when there
    are too few values for one."""

    estimate: float
    low: float
    high: float


class Difference(NamedTuple):
    """``group − other``: the difference of means with its interval (NaN when the test is
    exact or there are too few values), the test, the effect size (:data:`EFFECT`) and the
    test's two-sided p-value."""

    estimate: float
    low: float
    high: float
    test: str | None
    effect: float
    p: float


class Spread(NamedTuple):
    """What a table's power is worked out from: the pooled sd of its paired differences
    (``paired``) or of its runs about their groups' means, and the usual n per group."""

    sd: float
    n: int
    paired: bool


NONE = Interval(np.nan, np.nan, np.nan)


def rounded(values: Sequence[float] | np.ndarray, digits: int = DIGITS) -> np.ndarray:
    """``values`` to ``digits`` significant digits; equal inputs at that precision come out
    equal to the bit, so that ranks and differences do not see float32 noise."""
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x) & (x != 0)
    safe = np.where(finite, np.abs(x), 1.0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(safe)))
    return np.where(finite, np.round(x * scale) / scale, x)


def resolution(scale: float) -> float:
    """How far apart two values near ``scale`` may be and still be equal as compared: one
    and a half steps of the :data:`DIGITS`-digit grid there, since each value is rounded
    to it (half a step) and a difference of two carries two such errors."""
    if not scale or not np.isfinite(scale):
        return 0.0
    return 1.5 * 10.0 ** (np.floor(np.log10(abs(scale))) + 1 - DIGITS)


def n_distinct(values: np.ndarray, scale: float = 0.0) -> int:
    """How many different values ``values`` holds, as compared: two within the
    :func:`resolution` of ``scale`` (the size of what they were worked out from: a
    difference of two accuracies near 0.96 is rounding below 1.5e-6) or of their own
    largest count as one."""
    values = np.sort(np.asarray(values, dtype=float))
    if len(values) == 0:
        return 0
    tolerance = resolution(max(float(np.abs(values).max()), scale))
    return 1 + int(np.sum(np.diff(values) > tolerance))


def settled(values: np.ndarray) -> np.ndarray:
    """``values`` with those within the :func:`resolution` of the next one made equal to
    the smallest of them: means that only rounding tells apart rank together. NaN stays."""
    values = np.asarray(values, dtype=float)
    present = np.flatnonzero(~np.isnan(values))
    if len(present) == 0:
        return values.copy()
    tolerance = resolution(float(np.abs(values[present]).max()))
    order = present[np.argsort(values[present], kind="stable")]
    out = values.copy()
    for before, after in zip(order, order[1:], strict=False):
        if values[after] - values[before] <= tolerance:
            out[after] = out[before]
    return out


def method_for(n: int) -> str:
    """The interval method for ``n`` values: :data:`STUDENT` or :data:`BOOTSTRAP`."""
    return BOOTSTRAP if n >= BOOTSTRAP_FROM else STUDENT


def clipped(interval: Interval, bounds: tuple[float, float] | None) -> Interval:
    """``interval`` within ``bounds``: a mean of values in [0, 1] lies in [0, 1], so the
    part of an interval outside holds no value it could take and its coverage is kept."""
    if bounds is None or np.isnan(interval.low):
        return interval
    low, high = bounds
    return Interval(interval.estimate, max(interval.low, low), min(interval.high, high))


def difference_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """Where a difference of two values within ``bounds`` lies."""
    return None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])


def t_interval(estimate: float, se: float, df: float) -> Interval:
    """``estimate`` ± the t quantile with ``df`` degrees of freedom times ``se``. A zero
    standard error (every value equal) gives the point itself rather than scipy's NaN."""
    if se == 0:
        return Interval(estimate, estimate, estimate)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    return Interval(estimate, estimate - half, estimate + half)


def bootstrap(
    samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], scale: float = 0.0
) -> tuple[Interval, float]:
    """The percentile bootstrap of ``statistic`` over ``samples`` (each resampled apart),
    seeded, so that a report comes out the same every time: its interval, and the p-value
    of "the statistic is 0" read off the same resamples (twice the smaller tail, each
    counted with the observed value, ties at 0 split), which is below 5% when the interval
    leaves 0 out, give or take one resample; past the last :data:`TAIL` resamples, from
    the normal distribution with the resamples' sd. A resample within the
    :func:`resolution` of ``scale`` of 0 is a tie at 0."""
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(SEED),
        vectorized=True,
    )
    draws = result.bootstrap_distribution
    estimate = float(statistic(*samples, axis=-1))
    # A resample whose values cancel (differences of -1 and +1 test samples of 360) has a
    # mean of 0 up to the values' rounding: a tie at 0, within the resolution of ``scale``
    # (what the values were worked out from) or of the values themselves.
    largest = max(float(np.max(np.abs(sample), initial=0.0)) for sample in samples)
    zero = np.abs(draws) <= resolution(max(largest, scale))
    below = np.sum((draws < 0) & ~zero) + np.sum(zero) / 2
    beyond = min(below, RESAMPLES - below)
    spread = draws.std(ddof=1)
    if beyond >= TAIL or not spread:
        p = min(1.0, 2 * (beyond + 1) / (RESAMPLES + 1))
    else:
        # So few resamples past 0 say only that p is below about 0.002, and Holm's
        # correction over hundreds of pairs needs to know how far below: the normal
        # approximation to the same resamples says it.
        p = float(2 * stats.norm.sf(abs(estimate) / spread))
    low, high = result.confidence_interval
    return Interval(estimate, float(low), float(high)), p


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def mean_interval(
    values: Sequence[float] | np.ndarray, bounds: tuple[float, float] | None = None
) -> Interval:
    """The mean of ``values`` with its interval: Student t on n − 1 degrees of freedom
    below :data:`BOOTSTRAP_FROM` values, the percentile bootstrap from there on; no mean
    without values, no interval with fewer than :data:`MIN_N`; within ``bounds``."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return NONE
    mean = float(values.mean())
    if len(values) < MIN_N:
        return Interval(mean, np.nan, np.nan)
    if method_for(len(values)) == BOOTSTRAP and n_distinct(values) > 1:
        return clipped(bootstrap((values,), _mean)[0], bounds)
    se = values.std(ddof=1) / np.sqrt(len(values))
    return clipped(t_interval(mean, se, len(values) - 1), bounds)


def sign_test(differences: np.ndarray) -> float:
    """The exact two-sided sign test of "positive and negative differences are equally
    likely", on the non-zero ones: 3 of 3 in one direction is p = 0.25."""
    signs = np.sign(differences)
    nonzero = int(np.count_nonzero(signs))
    if nonzero == 0:
        return 1.0
    return float(stats.binomtest(int(np.sum(signs > 0)), nonzero).pvalue)


def signed_rank_effect(differences: np.ndarray) -> float:
    """The matched-pairs rank-biserial correlation: (R+ − R−) / (R+ + R−) over the ranks
    of the non-zero differences' sizes; ±1 when every pair goes one way, 0 for none."""
    nonzero = differences[differences != 0]
    if len(nonzero) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def _standardized(d: np.ndarray) -> float:
    """d_z: the mean of the paired differences over their sd; NaN without a spread."""
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return float(d.mean() / sd) if sd else np.nan


def _paired_means(d: np.ndarray, scale: float = 0.0) -> tuple[Interval, float]:
    """The mean of the differences ``d`` with its interval and the p-value of "it is 0":
    paired t, or the paired bootstrap from :data:`BOOTSTRAP_FROM` pairs (``scale``: the
    size of the values ``d`` was worked out from)."""
    if method_for(len(d)) == BOOTSTRAP:
        return bootstrap((d,), _mean, scale)
    n, estimate = len(d), float(d.mean())
    se = d.std(ddof=1) / np.sqrt(n)
    return t_interval(estimate, se, n - 1), float(2 * stats.t.sf(abs(estimate) / se, n - 1))


def paired_difference(
    values: np.ndarray,
    other: np.ndarray,
    test: str = MEAN,
    bounds: tuple[float, float] | None = None,
) -> Difference:
    """``values − other`` where ``values[i]`` and ``other[i]`` share a seed: the mean of the
    per-seed differences, which removes what a seed does to both, with its interval and
    test: paired t, or the paired bootstrap from :data:`BOOTSTRAP_FROM` pairs; the sign test,
    and no interval, when the differences have too few distinct values for the method
    (:data:`DISTINCT`); with ``test=WILCOXON`` the signed-rank test, beside the interval of
    the mean."""
    values, other = np.asarray(values, dtype=float), np.asarray(other, dtype=float)
    d = values - other
    n, estimate = len(d), float(d.mean())
    scale = float(np.abs(np.concatenate([values, other])).max()) if n else 0.0
    spread = n >= MIN_N and n_distinct(d, scale) >= DISTINCT[method_for(n)]
    if test == WILCOXON:
        name = SIGNED_RANK
    elif n >= MIN_N and not spread:
        name = SIGN
    else:
        name = PAIRED_BOOTSTRAP if method_for(n) == BOOTSTRAP else PAIRED_T
    effect = signed_rank_effect(d) if name in (SIGN, SIGNED_RANK) else _standardized(d)
    if n < MIN_N:
        return Difference(estimate, np.nan, np.nan, name, effect, np.nan)
    interval, p = (
        _paired_means(d, scale) if spread else (Interval(estimate, np.nan, np.nan), np.nan)
    )
    if name == SIGN:
        p = sign_test(d)
    elif name == SIGNED_RANK:
        # scipy's statistic is undefined when no pair differs: nothing to tell apart.
        p = float(stats.wilcoxon(d).pvalue) if np.any(d) else 1.0
    return Difference(*clipped(interval, difference_bounds(bounds)), name, effect, p)


def _cohen_d(values: np.ndarray, other: np.ndarray) -> float:
    """Cohen's d over the average of the two variances (Welch's setting); NaN without one."""
    if min(len(values), len(other)) < 2:
        return np.nan
    average = (values.var(ddof=1) + other.var(ddof=1)) / 2
    return float((values.mean() - other.mean()) / np.sqrt(average)) if average else np.nan


def _rank_sum_effect(values: np.ndarray, other: np.ndarray) -> float:
    """The rank-biserial correlation of two samples, 2U / (n1 n2) − 1 with U counted for
    ``values``: +1 when each of its runs beats each of the other's."""
    u = stats.mannwhitneyu(values, other).statistic
    return float(2 * u / (len(values) * len(other)) - 1)


def _unpaired_means(values: np.ndarray, other: np.ndarray) -> tuple[Interval, float]:
    """The difference of the means with Welch's interval and test, or the two-sample
    bootstrap's when both sides have :data:`BOOTSTRAP_FROM` runs."""
    if method_for(min(len(values), len(other))) == BOOTSTRAP:
        return bootstrap((values, other), _mean_difference)
    welch = stats.ttest_ind(values, other, equal_var=False)
    low, high = welch.confidence_interval(LEVEL)
    estimate = float(values.mean() - other.mean())
    return Interval(estimate, float(low), float(high)), float(welch.pvalue)


def unpaired_difference(
    values: np.ndarray,
    other: np.ndarray,
    test: str = MEAN,
    bounds: tuple[float, float] | None = None,
) -> Difference:
    """``mean(values) − mean(other)`` for runs that cannot be paired: Welch's interval and
    test (unequal variances, Welch–Satterthwaite degrees of freedom), or the two-sample
    bootstrap when both sides have :data:`BOOTSTRAP_FROM` runs; an exact permutation test,
    and no interval, when the runs have too few distinct distances from their group's
    mean; with ``test=WILCOXON`` the Mann–Whitney U test. Nothing below :data:`MIN_N` runs
    on either side."""
    values, other = np.asarray(values, dtype=float), np.asarray(other, dtype=float)
    estimate = float(values.mean() - other.mean())
    n = min(len(values), len(other))
    residuals = np.concatenate([values - values.mean(), other - other.mean()])
    scale = float(np.abs(np.concatenate([values, other])).max())
    spread = n >= MIN_N and n_distinct(residuals, scale) >= DISTINCT[method_for(n)]
    if test == WILCOXON:
        name = RANK_SUM
    elif n >= MIN_N and not spread:
        name = PERMUTATION
    else:
        name = UNPAIRED_BOOTSTRAP if method_for(n) == BOOTSTRAP else WELCH
    ranked = name in (RANK_SUM, PERMUTATION)
    effect = _rank_sum_effect(values, other) if ranked else _cohen_d(values, other)
    if n < MIN_N:
        return Difference(estimate, np.nan, np.nan, name, effect, np.nan)
    if spread:
        interval, p = _unpaired_means(values, other)
    else:
        interval, p = Interval(estimate, np.nan, np.nan), np.nan
    if name == PERMUTATION:
        p = permutation_test(values, other)
    elif name == RANK_SUM:
        p = float(stats.mannwhitneyu(values, other).pvalue)
    return Difference(*clipped(interval, difference_bounds(bounds)), name, effect, p)


def permutation_test(values: np.ndarray, other: np.ndarray) -> float:
    """The two-sided permutation test of the difference of means, exact when the ways to
    split the runs number :data:`RESAMPLES` or fewer (3 against 3: 20), else seeded."""
    return float(
        stats.permutation_test(
            (values, other),
            _mean_difference,
            permutation_type="independent",
            n_resamples=RESAMPLES,
            vectorized=True,
            rng=np.random.default_rng(SEED),
        ).pvalue
    )


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the p-values ``p`` (NaN stays NaN, and is not counted
    as a comparison): the k-th smallest times the comparisons left, never below the one
    before, at most 1. It keeps the chance of any false "worse" at 5% over the whole table."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    factors = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    return adjusted


def verdict(difference: Difference, p_holm: float, lower: bool) -> str:
    """What ``group − best`` says once its p-value is adjusted: :data:`FEW` without a test,
    :data:`TIED` at 5% or more, else :data:`WORSE`, or :data:`AHEAD_BY_RANKS` when a rank
    test finds the group ahead."""
    if np.isnan(p_holm):
        return FEW
    if p_holm >= ALPHA:
        return TIED
    ahead = difference.effect < 0 if lower else difference.effect > 0
    return AHEAD_BY_RANKS if ahead else WORSE


class Group(NamedTuple):
    """One group's completed runs: their values, in the order of their pair keys, those
    keys (None when a key repeats, or there are no pair columns: runs that cannot be
    paired) and the group's stratum (its dataset)."""

    values: np.ndarray
    keys: tuple | None
    stratum: tuple


def group(runs: pd.DataFrame, pairs: list[str], strata: list[str]) -> Group:
    """The :class:`Group` of ``runs``, which have ``value``, the ``pairs`` columns (seed,
    data seed) and the ``strata`` columns."""
    values, keys = runs["value"].to_numpy(dtype=float), None
    if pairs:
        # As text, so that a key a run lacks (NaN) equals another run's missing key.
        found = list(zip(*(runs[column].astype(str) for column in pairs), strict=True))
        if len(set(found)) == len(found):
            order = sorted(range(len(found)), key=found.__getitem__)
            keys, values = tuple(found[i] for i in order), values[order]
    return Group(values, keys, tuple(runs[strata].iloc[0]) if strata else ())


def paired(first: Group, second: Group) -> bool:
    """Whether two groups ran exactly the same pair keys, each once."""
    return first.keys is not None and first.keys == second.keys


def difference(
    first: Group, second: Group, test: str = MEAN, bounds: tuple[float, float] | None = None
) -> Difference:
    """``first − second``: paired when both ran exactly the same seeds on the same data
    (:func:`paired`), else unpaired."""
    if paired(first, second):
        return paired_difference(first.values, second.values, test, bounds)
    return unpaired_difference(first.values, second.values, test, bounds)


def _strata(groups: list[Group], lower: bool) -> list[list[int]]:
    """The positions of ``groups`` per stratum, each stratum's ordered by mean, the best
    first; of means only rounding tells apart (:func:`settled`), the first group first."""
    sign = 1 if lower else -1
    means = sign * settled(np.array([g.values.mean() for g in groups]))
    found: dict[tuple, list[int]] = {}
    for i, g in enumerate(groups):
        found.setdefault(g.stratum, []).append(i)
    return [sorted(positions, key=lambda i: means[i]) for positions in found.values()]


def _spread(groups: list[Group], best: Group) -> Spread | None:
    """The pooled sd (degrees of freedom as weights) of the paired differences between
    ``best`` and the other ``groups``, or, when none pairs with it, of each group's runs
    about their mean; None without two values anywhere."""
    samples = [
        g.values - best.values
        for g in groups
        if g is not best and paired(g, best) and len(g.values) > 1
    ]
    pairs = bool(samples)
    samples = samples or [g.values for g in groups if len(g.values) > 1]
    if not samples:
        return None
    df = sum(len(s) - 1 for s in samples)
    sd = float(np.sqrt(sum(np.var(s, ddof=1) * (len(s) - 1) for s in samples) / df))
    return Spread(sd, int(np.median([len(s) for s in samples])), pairs)


def against_best(
    frame: pd.DataFrame,
    groups: list[str],
    pairs: list[str],
    lower: bool,
    test: str = MEAN,
    strata: list[str] | None = None,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Each group's difference from the best group of its stratum (the best mean among the
    groups with the same ``strata`` values: a dataset), ``group − best``, one row per group
    in ``frame.groupby(groups)``'s order, with :data:`VERSUS`'s columns: the
    :class:`Difference` (:func:`difference`), ``p_holm``, Holm-adjusted over the stratum's
    comparisons, and the :func:`verdict`; :data:`BEST` for the best.
    ``attrs["spread"]`` maps each stratum's values to its :class:`Spread` (or None).

    ``frame`` has one row per completed run: the ``groups`` columns, the ``pairs`` columns
    (seed, data seed) and ``value``."""
    grouped = frame.groupby(groups, dropna=False, sort=True)
    members = [group(runs, pairs, strata or []) for _, runs in grouped]
    rows: list[list] = [[]] * len(members)
    spreads = {}
    for positions in _strata(members, lower):
        best = members[positions[0]]
        found = {i: difference(members[i], best, test, bounds) for i in positions[1:]}
        adjusted = holm([d.p for d in found.values()])
        rows[positions[0]] = [0.0, np.nan, np.nan, None, np.nan, np.nan, np.nan, BEST]
        for (i, d), p in zip(found.items(), adjusted, strict=True):
            rows[i] = [*d, p, verdict(d, p, lower)]
        spreads[best.stratum] = _spread([members[i] for i in positions], best)
    table = pd.DataFrame(rows, index=grouped["value"].mean().index, columns=list(VERSUS))
    table.attrs["spread"] = spreads
    return table


def pairwise(
    frame: pd.DataFrame,
    groups: list[str],
    pairs: list[str],
    lower: bool,
    test: str = MEAN,
    strata: list[str] | None = None,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Every pair of groups within a stratum: one row per pair, the better mean first
    (``group``, a tuple of its ``groups`` values), then ``other`` and ``other − group`` as
    a :class:`Difference`, Holm-adjusted over the stratum's pairs, with the
    :func:`verdict` of ``other`` against ``group`` (:data:`PAIRED_VERDICT`). ``frame`` is as for
    :func:`against_best`."""
    grouped = frame.groupby(groups, dropna=False, sort=True)
    keys = [key if isinstance(key, tuple) else (key,) for key, _ in grouped]
    members = [group(runs, pairs, strata or []) for _, runs in grouped]
    rows = []
    for positions in _strata(members, lower):
        found = [
            (i, j, difference(members[j], members[i], test, bounds))
            for i, j in combinations(positions, 2)
        ]
        adjusted = holm([d.p for *_, d in found])
        rows += [
            (keys[i], keys[j], *d, p, PAIRED_VERDICT[verdict(d, p, lower)])
            for (i, j, d), p in zip(found, adjusted, strict=True)
        ]
    return pd.DataFrame(rows, columns=["group", "other", *VERSUS])


def shared_ranks(means: pd.Series, verdicts: pd.Series, lower: bool) -> pd.Series:
    """Ranks, 1 for the best: the best group, the groups tied with it and any with the very
    same mean (but for rounding: :func:`settled`) share rank 1; the others follow by mean,
    after all of those (competition ranking: two tied with the best, the next is 3), equal
    means sharing the better rank. A group without a mean gets none."""
    means = pd.Series(settled(means.to_numpy(dtype=float)), index=means.index)
    best = means.min() if lower else means.max()
    first = verdicts.isin([BEST, TIED]) | (means == best)
    rest = means.where(~first).rank(ascending=lower, method="min") + first.sum()
    return rest.where(~first, 1).astype("Int64")


def _power(delta: float, spread: Spread, n: int) -> float:
    """The chance that a two-sided t-test at :data:`ALPHA` tells apart a true difference
    ``delta`` with ``n`` per group (pairs, or runs on each side), from the noncentral t."""
    if spread.paired:
        df, nc = n - 1, delta * np.sqrt(n) / spread.sd
    else:
        df, nc = 2 * n - 2, delta / (spread.sd * np.sqrt(2 / n))
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    # scipy's far tail of the noncentral t comes out NaN where it is all but 0.
    wrong_side = np.nan_to_num(stats.nct.cdf(-critical, df, nc), nan=0.0)
    return float(stats.nct.sf(critical, df, nc) + wrong_side)


def detectable(spread: Spread) -> float:
    """The smallest difference that ``spread.n`` seeds tell apart with :data:`POWER` (80%)
    at the 5% level, given the observed spread: NaN without a spread or with fewer than
    :data:`MIN_N` seeds, where no interval is given either."""
    if not spread.sd or spread.n < MIN_N:
        return np.nan
    from scipy.optimize import brentq

    high = spread.sd
    while _power(high, spread, spread.n) < POWER:
        high *= 2
    return float(brentq(lambda d: _power(d, spread, spread.n) - POWER, 0.0, high, xtol=1e-12))


def seeds_needed(delta: float, spread: Spread, most: int = 100_000) -> int | None:
    """The fewest seeds per group that tell apart a difference ``delta`` with
    :data:`POWER` at the 5% level, given the observed spread; None when even ``most``
    would not, or there is no spread to go by."""
    if not spread.sd or not delta:
        return None

    def enough(n: int) -> bool:
        return _power(abs(delta), spread, n) >= POWER

    # Doubling, then halving the last step: the noncentral t is only ever asked about
    # sample sizes near the answer, where it is accurate.
    high = 2
    while not enough(high):
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(2, high // 2)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return low


def pick_tuned(frame: pd.DataFrame, groups: list[str], key: str, lower: bool) -> pd.DataFrame:
    """For each group, the value of ``key`` whose runs have the best mean ``score`` (a
    validation metric): among the values with the fewest lost runs, since a value where runs
    diverged or failed is not one to pick on its survivors' numbers.

    ``frame`` has one row per run: the ``groups`` columns, ``key``, ``score`` (NaN for a run
    that did not complete) and ``lost`` (True for such a run). Equal means go to the
    smallest value. Returns one row per group: its columns, ``key``'s chosen value, that
    value's ``score`` mean and ``lost`` count. Nothing else in ``frame`` is read, test
    metrics included."""
    per_value = (
        frame.groupby([*groups, key], dropna=False, sort=True)
        .agg(score=("score", "mean"), lost=("lost", "sum"))
        .reset_index()
    )
    per_value = per_value[per_value["score"].notna()]
    # Equal scores go to the smallest value, by number when the values are numbers: MLflow
    # keeps params as text, where "1e-05" would sort after "0.001".
    numbers = pd.to_numeric(per_value[key], errors="coerce")
    per_value = per_value.assign(_order=numbers if numbers.notna().all() else per_value[key])
    order = per_value.sort_values(
        ["lost", "score", "_order"], ascending=[True, lower, True], kind="stable"
    )
    chosen = order.groupby(groups, dropna=False, sort=True).head(1).drop(columns="_order")
    return chosen.reset_index(drop=True)


def first_epoch(values: np.ndarray, threshold: float, lower: bool) -> float:
    """The first epoch, counted from 1, whose value reaches ``threshold`` (at or above it;
    at or below when ``lower``); NaN when none does."""
    values = np.asarray(values, dtype=float)
    reached = values <= threshold if lower else values >= threshold
    return float(np.argmax(reached) + 1) if reached.any() else np.nan


def curve_area(values: np.ndarray) -> float:
    """The area under a per-epoch curve, each epoch one unit wide, divided by the number of
    epochs: the curve's mean height, 1.0 for an accuracy that was perfect from the first
    epoch, and comparable between runs of different lengths."""
    return float(np.mean(np.asarray(values, dtype=float)))


def _first_at_half(quantiles: np.ndarray, probabilities: np.ndarray) -> float:
    """The first time at which a survival curve is down to one half or below; NaN when it
    never gets there."""
    below = np.flatnonzero(probabilities <= 0.5 + 1e-12)
    return float(quantiles[below[0]]) if len(below) else np.nan


def median_epoch(epochs: np.ndarray, reached: np.ndarray) -> Interval:
    """The Kaplan–Meier median of the epoch at which runs reach a level: ``epochs[i]`` is
    when run i reached it or, where ``reached[i]`` is False, its last epoch, where it is
    censored. The median is the first epoch at which the estimated share of runs still
    short of the level is one half or less; its interval (Brookmeyer–Crowley) runs
    between the first epochs at which the log-log 95% band of that share gets there, and
    is NaN on a side where it never does, so it never leaves the epochs that were run."""
    epochs, reached = np.asarray(epochs, dtype=float), np.asarray(reached, dtype=bool)
    if not reached.any():
        return NONE
    sf = stats.ecdf(stats.CensoredData(uncensored=epochs[reached], right=epochs[~reached])).sf
    with warnings.catch_warnings():
        # The log-log band is undefined where the estimate is 0 (every run has got there):
        # the level is certainly reached by then, so the band is 0 there too.
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(LEVEL, method="log-log")
    gone = sf.probabilities == 0
    low = np.where(gone, 0.0, band.low.probabilities)
    high = np.where(gone, 0.0, band.high.probabilities)
    return Interval(
        _first_at_half(sf.quantiles, sf.probabilities),
        _first_at_half(sf.quantiles, low),
        _first_at_half(sf.quantiles, high),
    )


def speed(
    history: pd.DataFrame,
    groups: list[str],
    threshold: float,
    lower: bool,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """How fast each group's curves get to ``threshold``, from ``history``: one row per run
    and epoch with the ``groups`` columns, ``run``, ``step`` (the epoch index) and
    ``value``. One row per group: ``runs``; ``reached``, the runs that got there;
    ``median`` with ``median_low`` and ``median_high``, the :func:`median_epoch`, with the
    runs that never got there censored at their last epoch; ``epochs``, the most epochs a
    run had; ``area`` with ``area_low`` and ``area_high``, the mean of :func:`curve_area`
    over every run, within ``bounds``."""
    per_run = (
        history.assign(value=rounded(history["value"]))
        .sort_values("step", kind="stable")
        .groupby([*groups, "run"], dropna=False, sort=True)["value"]
        .agg(
            first=lambda v: first_epoch(v.to_numpy(), threshold, lower),
            epochs="size",
            area=lambda v: curve_area(v.to_numpy()),
        )
        .reset_index()
    )
    rows = []
    for key, runs in per_run.groupby(groups, dropna=False, sort=True):
        reached = runs["first"].notna().to_numpy()
        epochs = runs["first"].fillna(runs["epochs"]).to_numpy()
        median = median_epoch(epochs, reached)
        area = mean_interval(runs["area"].to_numpy(), bounds)
        rows.append((*key, len(runs), int(reached.sum()), *median, runs["epochs"].max(), *area))
    columns = [*groups, "runs", "reached", "median", "median_low", "median_high", "epochs"]
    return pd.DataFrame(rows, columns=[*columns, "area", "area_low", "area_high"])
