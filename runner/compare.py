"""Comparison: MLflow runs -> a pandas table of each combination's metric over seeds.

The runs come from ``mlflow.search_runs`` as a DataFrame (``params.*``, ``metrics.*``,
``tags.*`` columns); this module only groups and ranks them.
"""

from __future__ import annotations

import pandas as pd

from runner.track import COMPLETED, DIVERGED, FAILED, INTERRUPTED

# Params that identify a run or repeat it, never what a comparison is about.
NOT_COMPARED = {"seed", "tracking.uri", "tracking.experiment"}
CHOICES = ("activation", "loss", "dataset", "optimizer")
LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse")
SUMMARY_COLUMNS = {"n", DIVERGED, FAILED, INTERRUPTED, "mean", "std", "min", "max", "rank"}


def sweep_runs(uri: str, sweep_id: str) -> pd.DataFrame:
    """The job runs of one sweep, in every experiment of the store."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        filter_string=f"tags.sweep_id = '{sweep_id}' and tags.role = 'job'",
        search_all_experiments=True,
    )
    return runs


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params (without ``params.``) that tell the runs' combinations apart, seed aside.

    A param is kept only when it splits the runs further than the params kept before it,
    the choices a user names first: ``loss.name`` adds nothing to ``loss``, and neither does
    ``optimizer.learning_rate`` when it only changes with ``optimizer``."""
    names = [c.removeprefix("params.") for c in runs.columns if c.startswith("params.")]
    names.sort(key=lambda name: (name.count("."), name not in CHOICES))
    kept: list[str] = []
    groups = 1
    for name in names:
        if name in NOT_COMPARED:
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
    runs: pd.DataFrame, by: list[str] | None = None, metric: str | None = None
) -> pd.DataFrame:
    """One row per combination of ``by`` (default: the params that vary): mean, std, min
    and max of ``metric`` over the runs that completed, how many completed, diverged or
    failed, and the rank of the mean (1 is best)."""
    by = by or varying_params(runs) or ["activation"]
    metric = metric or default_metric(runs)
    column = f"metrics.{metric}"
    runs = runs.assign(
        _value=runs[column] if column in runs.columns else float("nan"),
        _outcome=runs.get("tags.outcome", pd.Series(index=runs.index, dtype=object)).fillna(
            INTERRUPTED
        ),
    )
    completed = runs[runs["_outcome"] == COMPLETED]
    keys = [f"params.{p}" for p in by]
    stats = completed.groupby(keys, dropna=False)["_value"].agg(["mean", "std", "min", "max"])
    counts = runs.groupby(keys, dropna=False)["_outcome"].value_counts().unstack(fill_value=0)
    for outcome in (COMPLETED, DIVERGED, FAILED, INTERRUPTED):
        if outcome not in counts.columns:
            counts[outcome] = 0
    table = counts[[COMPLETED, DIVERGED, FAILED, INTERRUPTED]].join(stats, how="left")
    table = table.rename(columns={COMPLETED: "n"})
    ascending = metric.removeprefix("test_").removeprefix("val_") in LOWER_IS_BETTER
    table["rank"] = table["mean"].rank(ascending=ascending, method="min").astype("Int64")
    table = table.sort_values("rank", na_position="last")
    table.index = table.index.set_names(by)
    table = table.reset_index()
    table.attrs["metric"] = metric
    return table


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text: ``mean ± std`` of the metric, min, max, the counts and
    the rank."""
    metric = table.attrs.get("metric", "metric")
    by = [c for c in table.columns if c not in SUMMARY_COLUMNS]

    def number(value: float) -> str:
        return "—" if pd.isna(value) else f"{value:.4f}"

    shown = table[by].copy()
    shown[f"{metric} mean ± std"] = [
        number(m) if pd.isna(s) else f"{m:.4f} ± {s:.4f}"
        for m, s in zip(table["mean"], table["std"], strict=True)
    ]
    shown["min"] = table["min"].map(number)
    shown["max"] = table["max"].map(number)
    for column in ("n", DIVERGED, FAILED, INTERRUPTED, "rank"):
        shown[column] = table[column]
    return shown.to_string(index=False)
