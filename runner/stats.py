"""The statistics of a comparison: confidence intervals of means and of differences, ranks
shared by groups the data cannot tell apart, a tuned key chosen on validation, and how fast
a validation curve gets somewhere.

Plain functions over numpy arrays and pandas DataFrames, with no MLflow in sight:
``runner.compare`` reads the runs and hands their numbers here. Every interval is a 95%
Student-t interval, and none is given for fewer than :data:`MIN_N` values: with two, the t
quantile (12.7) makes the interval too wide to say anything, and with one there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
MIN_N = 3
FEW = f"n < {MIN_N}"
BEST = "best"
TIED = "tied with the best"
WORSE = "worse than the best"
PAIRED = "paired by seed"
WELCH = "Welch"


class Interval(NamedTuple):
    """An estimate and its 95% confidence interval; ``low`` and ``high`` are NaN when there
    are too few values for one."""

    estimate: float
    low: float
    high: float


def t_interval(estimate: float, se: float, df: float) -> Interval:
    """``estimate`` ± the t quantile with ``df`` degrees of freedom times ``se``. A zero
    standard error (every value equal) gives the point itself rather than scipy's NaN."""
    if se == 0:
        return Interval(estimate, estimate, estimate)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    return Interval(estimate, estimate - half, estimate + half)


def mean_interval(values: Sequence[float] | np.ndarray) -> Interval:
    """The mean of ``values`` with its Student-t interval on n − 1 degrees of freedom: no
    mean without values, no interval with fewer than :data:`MIN_N`."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return Interval(np.nan, np.nan, np.nan)
    mean = float(values.mean())
    if len(values) < MIN_N:
        return Interval(mean, np.nan, np.nan)
    return t_interval(mean, values.std(ddof=1) / np.sqrt(len(values)), len(values) - 1)


def paired_difference(values: np.ndarray, best: np.ndarray) -> Interval:
    """``values − best`` where ``values[i]`` and ``best[i]`` share a seed: the mean of the
    per-seed differences with its t interval, which removes what a seed does to both."""
    return mean_interval(np.asarray(values, dtype=float) - np.asarray(best, dtype=float))


def welch_difference(values: np.ndarray, best: np.ndarray) -> Interval:
    """``mean(values) − mean(best)`` with Welch's interval: unequal variances, the
    Welch–Satterthwaite degrees of freedom. No interval when either side has fewer than
    :data:`MIN_N` values."""
    values, best = np.asarray(values, dtype=float), np.asarray(best, dtype=float)
    estimate = float(values.mean() - best.mean())
    if min(len(values), len(best)) < MIN_N:
        return Interval(estimate, np.nan, np.nan)
    a, b = values.var(ddof=1) / len(values), best.var(ddof=1) / len(best)
    if a + b == 0:
        # Every value equal on both sides: no spread, and no degrees of freedom to compute.
        return Interval(estimate, estimate, estimate)
    df = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(best) - 1))
    return t_interval(estimate, np.sqrt(a + b), df)


def _pairs(frame: pd.DataFrame, pairs: list[str]) -> pd.Series | None:
    """A group's values indexed by their ``pairs`` key, or None when a key repeats (two
    runs of one seed cannot be paired) or there are no pair columns."""
    if not pairs or frame.duplicated(pairs).any():
        return None
    return frame.set_index(pairs)["value"].sort_index()


def against_best(
    frame: pd.DataFrame, groups: list[str], pairs: list[str], lower: bool
) -> pd.DataFrame:
    """Each group's difference from the best group (the best mean), ``group − best``, with
    its 95% interval, one row per group in ``frame.groupby(groups)``'s order.

    ``frame`` has one row per completed run: the ``groups`` columns, the ``pairs`` columns
    (seed, data seed) and ``value``. When a group has exactly the best group's pair keys,
    each once, the difference is paired by them; otherwise it is Welch's. Columns: ``diff``,
    ``diff_low``, ``diff_high``, ``test`` (:data:`PAIRED`, :data:`WELCH`, missing for the best),
    ``verdict``: :data:`BEST`, :data:`TIED` when the interval holds 0, :data:`WORSE`, or
    :data:`FEW` when there is no interval."""
    grouped = frame.groupby(groups, dropna=False, sort=True)
    means = grouped["value"].mean()
    columns = ["diff", "diff_low", "diff_high", "test", "verdict"]
    if means.empty:
        return pd.DataFrame(columns=columns, index=means.index)
    # By position: a group key may hold NaN (a param some runs lack), which no lookup finds.
    members = [runs for _, runs in grouped]
    best = members[int(np.argmin(means) if lower else np.argmax(means))]
    best_pairs = _pairs(best, pairs)
    rows = []
    for runs in members:
        if runs is best:
            rows.append((0.0, np.nan, np.nan, None, BEST))
            continue
        mine = _pairs(runs, pairs)
        if mine is not None and best_pairs is not None and mine.index.equals(best_pairs.index):
            test, interval = PAIRED, paired_difference(mine.to_numpy(), best_pairs.to_numpy())
        else:
            test = WELCH
            interval = welch_difference(runs["value"].to_numpy(), best["value"].to_numpy())
        if np.isnan(interval.low):
            verdict = FEW
        else:
            verdict = TIED if interval.low <= 0 <= interval.high else WORSE
        rows.append((*interval, test, verdict))
    return pd.DataFrame(rows, index=means.index, columns=columns)


def shared_ranks(means: pd.Series, verdicts: pd.Series, lower: bool) -> pd.Series:
    """Ranks, 1 for the best: the best group, the groups tied with it and any with the very
    same mean share rank 1; the others follow by mean, after all of those (competition
    ranking: two tied with the best, the next is 3), equal means sharing the better rank.
    A group without a mean gets none."""
    best = means.min() if lower else means.max()
    first = verdicts.isin([BEST, TIED]) | (means == best)
    rest = means.where(~first).rank(ascending=lower, method="min") + first.sum()
    return rest.where(~first, 1).astype("Int64")


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


def speed(history: pd.DataFrame, groups: list[str], threshold: float, lower: bool) -> pd.DataFrame:
    """How fast each group's curves get to ``threshold``, from ``history``: one row per run
    and epoch with the ``groups`` columns, ``run``, ``step`` (the epoch index) and
    ``value``. One row per group: ``runs``; ``never``, the runs that never reached it;
    ``first`` with ``first_low`` and ``first_high``, the mean first epoch (from 1) over the
    runs that did, with its interval; ``area`` with ``area_low`` and ``area_high``, the mean
    of :func:`curve_area` over every run."""
    per_run = (
        history.sort_values("step", kind="stable")
        .groupby([*groups, "run"], dropna=False, sort=True)["value"]
        .agg(
            first=lambda v: first_epoch(v.to_numpy(), threshold, lower),
            area=lambda v: curve_area(v.to_numpy()),
        )
        .reset_index()
    )
    rows = []
    for key, runs in per_run.groupby(groups, dropna=False, sort=True):
        first = mean_interval(runs["first"].dropna().to_numpy())
        area = mean_interval(runs["area"].to_numpy())
        rows.append((*key, len(runs), int(runs["first"].isna().sum()), *first, *area))
    columns = [
        *groups,
        *("runs", "never", "first", "first_low", "first_high", "area", "area_low", "area_high"),
    ]
    return pd.DataFrame(rows, columns=columns)
