"""The comparison's numbers: runs grouped by the params that vary, each group's metric over
its seeds with its interval, its difference from the best group and its rank, and how fast
each group learns. Pure functions of the runs' DataFrame, bar the histories they read."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from runner.compare.runs import histories, outcomes
from runner.config import not_training
from runner.metrics import lower_is_better
from runner.stats import against_best, mean_interval, shared_ranks, speed
from runner.tracking import COMPLETED, DIVERGED, FAILED, INTERRUPTED

# Params that repeat a run (its seed) or do not change what it trains (the schema says
# which: where it is recorded, whether it was resumed, the threads it had...): never what
# a comparison is about.
NOT_COMPARED = ("seed", *not_training())
CHOICES = ("activation", "loss", "dataset", "optimizer")
COUNTS = (DIVERGED, FAILED, INTERRUPTED)
STATS = ("mean", "std", "min", "max")
# Each mean's interval, and each group's difference from the best group with its interval.
INTERVAL = ("ci_low", "ci_high")
VERSUS = ("diff", "diff_low", "diff_high", "test", "verdict")
SUMMARY_COLUMNS = {*STATS, *INTERVAL, "n", *COUNTS, *VERSUS, "rank"}
# The params that say which runs can be paired: the same training seed on the same data.
PAIRS = ("seed", "dataset.seed")


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
    """``test_accuracy`` when the runs classify, else ``test_rmse``."""
    return "test_accuracy" if "metrics.test_accuracy" in runs.columns else "test_rmse"


def summarize(
    runs: pd.DataFrame,
    by: list[str] | None = None,
    metric: str | None = None,
    lower: bool | None = None,
) -> pd.DataFrame:
    """One row per combination of ``by`` (default: the params that vary): mean, std
    (ddof=1), the mean's 95% interval (``ci_low``, ``ci_high``; none below 3 runs), min and
    max of ``metric`` over the runs that completed, how many completed (``n``), diverged,
    failed or were interrupted, the difference from the best group with its interval and
    test (``diff``, ``diff_low``, ``diff_high``, ``test``: paired by seed where both groups
    ran the same seeds on the same data, else Welch's), its ``verdict`` (best, tied with the
    best, worse, or n < 3) and the rank (1 is best, shared by the groups tied with the best
    and by equal means). ``lower`` overrides :func:`lower_is_better`. The table's ``attrs``
    keep the metric and the direction."""
    by = by or varying_params(runs) or ["activation"]
    metric = metric or default_metric(runs)
    lower = lower_is_better(metric) if lower is None else lower
    column = f"metrics.{metric}"
    keys = [f"params.{p}" for p in by]
    # A key no run has (a store of failed runs) is one group rather than a KeyError.
    runs = runs.assign(**{k: np.nan for k in keys if k not in runs.columns})
    runs = runs.assign(
        _value=runs[column] if column in runs.columns else np.nan, _outcome=outcomes(runs)
    )
    completed = runs[(runs["_outcome"] == COMPLETED) & runs["_value"].notna()]
    grouped = completed.groupby(keys, dropna=False)["_value"]
    stats = grouped.agg(list(STATS)).join(
        grouped.agg(ci_low=lambda v: mean_interval(v).low, ci_high=lambda v: mean_interval(v).high)
    )
    pairs = [f"params.{p}" for p in PAIRS if f"params.{p}" in runs.columns]
    versus = against_best(completed.rename(columns={"_value": "value"}), keys, pairs, lower)
    counts = runs.groupby(keys, dropna=False)["_outcome"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=[COMPLETED, *COUNTS], fill_value=0)
    table = stats.join(versus).join(counts, how="right").rename(columns={COMPLETED: "n"})
    table = table[[*STATS, *INTERVAL, "n", *COUNTS, *VERSUS]]
    table["rank"] = shared_ranks(table["mean"], table["verdict"], lower)
    table = table.sort_values(
        ["rank", "mean"], ascending=[True, lower], kind="stable", na_position="last"
    )
    table.index = table.index.set_names(by)
    table = table.reset_index()
    table.attrs.update(metric=metric, lower_is_better=lower)
    return table


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


def curves(uri: str, runs: pd.DataFrame, by: list[str], metric: str) -> pd.Series:
    """``metric``'s history per group and epoch, the mean over the group's completed runs
    (its seeds), indexed by (group label, step)."""
    history = histories(uri, runs, by, metric)
    history["group"] = group_labels(history, by)
    return history.groupby(["group", "step"])["value"].mean()


def speed_table(
    uri: str, runs: pd.DataFrame, table: pd.DataFrame, name: str, level: float
) -> pd.DataFrame:
    """How fast each group of the summary ``table``, in its order, gets ``name``'s curve to
    ``level`` (at or above it; at or below for a loss or an error), from each completed
    run's history in MLflow: see :func:`runner.stats.speed`. ``attrs`` keep the metric, the
    level and the direction."""
    by = group_columns(table)
    lower = lower_is_better(name)
    pace = table[by].merge(speed(histories(uri, runs, by, name), by, level, lower), how="left")
    pace.attrs.update(metric=name, level=level, lower_is_better=lower)
    return pace
