"""Differences between groups: paired or unpaired, their tests (exact where values cannot
spread), effect sizes, Holm's correction, the verdicts against the best and between every
pair, and the ranks that groups the data cannot tell apart share."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from runner.stats.intervals import (
    AHEAD_BY_RANKS,
    ALPHA,
    BEST,
    BOOTSTRAP,
    DISTINCT,
    FEW,
    LEVEL,
    MEAN,
    MIN_N,
    PAIRED_BOOTSTRAP,
    PAIRED_T,
    PAIRED_VERDICT,
    PERMUTATION,
    RANK_SUM,
    RESAMPLES,
    SEED,
    SIGN,
    SIGNED_RANK,
    TIED,
    UNPAIRED_BOOTSTRAP,
    VERSUS,
    WELCH,
    WILCOXON,
    WORSE,
    Difference,
    Interval,
    Spread,
    bootstrap,
    clipped,
    difference_bounds,
    mean_difference,
    method_for,
    n_distinct,
    sample_mean,
    settled,
    t_interval,
)


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
        return bootstrap((d,), sample_mean, scale)
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
        return bootstrap((values, other), mean_difference)
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
            mean_difference,
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
