"""How fast a curve gets somewhere: the first epoch at a level, with runs that never
reach it censored (Kaplan–Meier), and the area under the curve."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from runner.stats.intervals import LEVEL, NONE, Interval, mean_interval, rounded


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
