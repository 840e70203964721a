"""Intervals of a mean: Student t for few values, a seeded percentile bootstrap from
:data:`BOOTSTRAP_FROM` on, clipped to a bounded metric's range; the constants and shapes
the rest of the package shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
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


def sample_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
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
        return clipped(bootstrap((values,), sample_mean)[0], bounds)
    se = values.std(ddof=1) / np.sqrt(len(values))
    return clipped(t_interval(mean, se, len(values) - 1), bounds)
