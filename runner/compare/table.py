"""The comparison's numbers: runs grouped by the params that vary, each group's metric over
its seeds with its interval, its difference from the best group and its rank, and how fast
each group learns. Pure functions of the runs' DataFrame, bar the histories they read."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from pandas.api.typing import SeriesGroupBy

from runner.compare.runs import Histories, outcomes
from runner.config import Task, not_training
from runner.metrics import bounds, lower_is_better
from runner.stats.differences import against_best, pairwise, shared_ranks
from runner.stats.intervals import MEAN, VERSUS, mean_interval, rounded
from runner.stats.speed import speed
from runner.tracking import COMPLETED, DIVERGED, FAILED, INTERRUPTED

# Params that repeat a run (its seed, its fold of k-fold splits) or do not change what it
# trains (the schema says which: where it is recorded, whether it was resumed, the threads
# it had...): never what a comparison is about.
NOT_COMPARED = ("seed", "dataset.fold", *not_training())
CHOICES = ("activation", "loss", "dataset", "optimizer")
COUNTS = (DIVERGED, FAILED, INTERRUPTED)
STATS = ("mean", "std", "min", "max")
# Each mean's interval.
INTERVAL = ("ci_low", "ci_high")
SUMMARY_COLUMNS = {*STATS, *INTERVAL, "n", *COUNTS, *VERSUS, "rank"}
# The params that say which runs can be paired: the same training seed on the same data,
# and the same fold of it.
PAIRS = ("seed", "dataset.seed", "dataset", "dataset.fold")
# What a comparison stays within: runs on different datasets are never ranked together.
STRATA = ("dataset",)
TASK = "tags.task"


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params (without ``params.``) that tell the runs' combinations apart, seed aside.

    A param is kept only when it splits the runs further than the params kept before it,
    the choices a user names first: ``loss.name`` adds nothing to ``loss``, and neither does
    ``optimizer.learning_rate`` when it only changes with ``optimizer``."""
    names = [c.removeprefix("params.") for c in runs.columns if c.startswith("params.")]
    # The choices in their own order, then the rest alphabetically: the same columns in the
    # same order whatever order the store returns the params in.
    rank = {name: i for i, name in enumerate(CHOICES)}
    names.sort(key=lambda name: (name.count("."), rank.get(name, len(rank)), name))
    kept: list[str] = []
    groups = 1
    for name in names:
        if any(name == key or name.startswith(f"{key}.") for key in NOT_COMPARED):
            continue
        split = runs.groupby([f"params.{p}" for p in [*kept, name]], dropna=False).ngroups
        if split > groups:
            kept.append(name)
            groups = split
    return kept


def default_metric(runs: pd.DataFrame) -> str:
    """``test_accuracy`` when the runs classify, ``test_rmse`` when they regress: as their
    ``task`` tag says (every job run carries it, a failed one too), else as the metrics
    they logged say."""
    tasks = set(runs[TASK].dropna()) if TASK in runs.columns else set()
    if tasks in ({Task.classification.value}, {Task.regression.value}):
        return "test_accuracy" if tasks == {Task.classification.value} else "test_rmse"
    return "test_accuracy" if "metrics.test_accuracy" in runs.columns else "test_rmse"


def completed_values(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """The completed runs that logged ``metric``, with ``value``, the metric rounded to
    :data:`runner.stats.intervals.DIGITS` significant digits, and every column of ``keys`` (NaN
    where no run has one: a store of failed runs is then one group, not a KeyError)."""
    column = f"metrics.{metric}"
    runs = runs.assign(**{k: np.nan for k in keys if k not in runs.columns})
    value = rounded(runs[column]) if column in runs.columns else np.nan
    runs = runs.assign(value=value, _outcome=outcomes(runs))
    return runs[(runs["_outcome"] == COMPLETED) & runs["value"].notna()]


def _intervals(grouped: SeriesGroupBy, limits: tuple[float, float] | None) -> pd.DataFrame:
    """Each group's mean interval (:func:`mean_interval`), worked out once per group."""
    found = {key: mean_interval(values.to_numpy(), limits)[1:] for key, values in grouped}
    return pd.DataFrame.from_dict(found, orient="index", columns=list(INTERVAL)).set_axis(
        grouped.mean().index
    )


def summarize(
    runs: pd.DataFrame,
    by: list[str] | None = None,
    metric: str | None = None,
    lower: bool | None = None,
    test: str = MEAN,
) -> pd.DataFrame:
    """One row per combination of ``by`` (default: the params that vary): mean, std
    (ddof=1), the mean's 95% interval (``ci_low``, ``ci_high``; none below 3 runs), min and
    max of ``metric`` over the runs that completed, how many completed (``n``), diverged,
    failed or were interrupted; the difference from the best group of its dataset with its
    interval, test, effect size, p-value and Holm-adjusted p-value (:func:`against_best`),
    its ``verdict`` (best, tied with the best, worse, or n < 3), and the rank within its
    dataset (1 is best, shared by the groups tied with the best and by equal means). Values
    are compared to :data:`runner.stats.intervals.DIGITS` significant digits. ``lower`` overrides
    :func:`lower_is_better`; ``test`` picks the tests (:data:`runner.stats.intervals.TESTS`). The
    table's ``attrs`` keep the metric, the direction, the metric's bounds, the test, the
    strata (the dataset columns among ``by``) and their spreads (for the power)."""
    by = by or varying_params(runs) or ["activation"]
    metric = metric or default_metric(runs)
    lower = lower_is_better(metric) if lower is None else lower
    limits = bounds(metric)
    keys = [f"params.{p}" for p in by]
    strata = [p for p in by if p in STRATA]
    runs = runs.assign(**{k: np.nan for k in keys if k not in runs.columns})
    completed = completed_values(runs, keys, metric)
    grouped = completed.groupby(keys, dropna=False)["value"]
    stats = grouped.agg(list(STATS)).join(_intervals(grouped, limits))
    pairs = [f"params.{p}" for p in PAIRS if f"params.{p}" in runs.columns]
    strata_keys = [f"params.{p}" for p in strata]
    versus = against_best(completed, keys, pairs, lower, test, strata_keys, limits)
    counts = outcomes(runs).groupby([runs[k] for k in keys], dropna=False).value_counts()
    counts = counts.unstack(fill_value=0).reindex(columns=[COMPLETED, *COUNTS], fill_value=0)
    table = stats.join(versus).join(counts, how="right").rename(columns={COMPLETED: "n"})
    table = table[[*STATS, *INTERVAL, "n", *COUNTS, *VERSUS]]
    table.index = table.index.set_names(by)
    table = table.reset_index()
    within = table.groupby(strata, dropna=False, sort=False) if strata else [((), table)]
    table["rank"] = pd.concat(
        [shared_ranks(part["mean"], part["verdict"], lower) for _, part in within]
    )
    table = table.sort_values(
        [*strata, "rank", "mean"],
        ascending=[*[True] * len(strata), True, lower],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
    table.attrs.update(
        metric=metric,
        lower_is_better=lower,
        bounds=limits,
        test=test,
        strata=strata,
        spread=versus.attrs["spread"],
    )
    return table


def pairs_table(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every pair of the summary ``table``'s groups within a dataset (see
    :func:`runner.stats.differences.pairwise`), from the same runs, metric, direction and test."""
    by = group_columns(table)
    keys = [f"params.{p}" for p in by]
    completed = completed_values(runs, keys, table.attrs["metric"])
    strata = [f"params.{p}" for p in table.attrs["strata"]]
    pairs = [f"params.{p}" for p in PAIRS if f"params.{p}" in runs.columns]
    found = pairwise(
        completed,
        keys,
        pairs,
        table.attrs["lower_is_better"],
        table.attrs["test"],
        strata,
        table.attrs["bounds"],
    )
    found.attrs.update(table.attrs, by=by)
    return found


def group_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a summary that name its groups."""
    return [c for c in table.columns if c not in SUMMARY_COLUMNS]


def group_labels(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """One label per row from its values in ``columns``, such as ``relu · mse``; the same
    for a summary's row and for the runs of that group."""
    return [
        " · ".join("—" if pd.isna(v) else str(v) for v in values)
        for values in frame[columns].itertuples(index=False)
    ]


def curve_metric(metric: str, available: Iterable[str]) -> str:
    """The per-epoch metric that shows how ``metric`` came about: its validation twin when
    the runs logged one (``test_accuracy`` and ``accuracy`` -> ``val_accuracy``,
    ``test_rmse`` -> ``val_rmse``, ``test_loss`` -> ``val_loss``), else ``metric`` itself
    (``grad_norm/hidden_0``)."""
    twin = "val_" + metric.removeprefix("test_").removeprefix("val_")
    return twin if twin in set(available) else metric


def seed_values(runs: pd.DataFrame, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each group's values of the summary ``table``'s metric, one per completed run, as
    the table compared them, by the group's label."""
    by = group_columns(table)
    completed = completed_values(runs, [f"params.{p}" for p in by], table.attrs["metric"])
    labels = group_labels(completed, [f"params.{p}" for p in by])
    return {label: values.to_numpy() for label, values in completed.groupby(labels)["value"]}


def curves(histories: Histories, runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """``metric``'s history per group and epoch over the group's completed runs (its
    seeds): their ``mean``, ``low`` and ``high`` (the seeds' range), indexed by (group
    label, step)."""
    history = histories.of(runs, by, metric)
    history["group"] = group_labels(history, by)
    return history.groupby(["group", "step"])["value"].agg(mean="mean", low="min", high="max")


def speed_table(
    histories: Histories, runs: pd.DataFrame, table: pd.DataFrame, name: str, level: float
) -> pd.DataFrame:
    """How fast each group of the summary ``table``, in its order, gets ``name``'s curve to
    ``level`` (at or above it; at or below for a loss or an error), from each completed
    run's history in MLflow: see :func:`runner.stats.speed.speed`. ``attrs`` keep the metric, the
    level and the direction."""
    by = group_columns(table)
    lower = lower_is_better(name)
    found = speed(histories.of(runs, by, name), by, level, lower, bounds(name))
    pace = table[by].merge(found, how="left")
    pace.attrs.update(metric=name, level=level, lower_is_better=lower)
    return pace
