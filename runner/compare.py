"""Comparison: MLflow runs -> each combination's metric over seeds, as a table and a figure.

``python -m runner.compare`` picks runs (the latest sweep, a named sweep, an experiment, an
MLflow filter), groups them by the params that vary, ranks the groups by a metric, prints
the table and writes ``comparison.md``, ``comparison.csv`` and ``comparison.png``, which it
also logs to the sweep's parent runs. The runs come from ``mlflow.search_runs`` as a
DataFrame (``params.*``, ``metrics.*``, ``tags.*`` columns); this module groups and ranks
them and draws them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.config import UserError
from runner.metrics import lower_is_better
from runner.stats import (
    BEST,
    FEW,
    LEVEL,
    TIED,
    against_best,
    mean_interval,
    pick_tuned,
    shared_ranks,
    speed,
)
from runner.tracking import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    ROLE,
    SWEEP_ID,
    quoted,
    sqlite_path,
    tracking_uri,
)
from runner.tracking.store import open_client, reason, store_errors

# Params that identify a run or repeat it, never what a comparison is about.
NOT_COMPARED = {"seed", "tracking.uri", "tracking.experiment", "tracking.adopt_foreign_db"}
# What to do about a store that compare cannot use.
WAY_OUT = "Point --uri (or MLFLOW_TRACKING_URI) at the MLflow store that the runner records in."
CHOICES = ("activation", "loss", "dataset", "optimizer")
COUNTS = (DIVERGED, FAILED, INTERRUPTED)
STATS = ("mean", "std", "min", "max")
# Each mean's interval, and each group's difference from the best group with its interval.
INTERVAL = ("ci_low", "ci_high")
VERSUS = ("diff", "diff_low", "diff_high", "test", "verdict")
SUMMARY_COLUMNS = {*STATS, *INTERVAL, "n", *COUNTS, *VERSUS, "rank"}
# The params that say which runs can be paired: the same training seed on the same data.
PAIRS = ("seed", "dataset.seed")
RUN_NAME = "tags.mlflow.runName"
OUTCOME = "tags.outcome"
STYLES = ("-", "--", ":", "-.")
# How many sweep names an unknown --sweep lists.
RECENT = 5


def sweep_runs(uri: str, sweep_id: str) -> pd.DataFrame:
    """The job runs of one sweep, in every experiment of the store, as ``mlflow.search_runs``
    returns them."""
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(
        filter_string=f"tags.{SWEEP_ID} = {quoted(sweep_id)} and tags.{ROLE} = 'job'",
        search_all_experiments=True,
    )


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


def outcomes(runs: pd.DataFrame) -> pd.Series:
    """Each run's ``outcome`` tag; a run without one never reached its end (killed before
    MLflow heard of it, or still running), so it counts as interrupted."""
    return runs.get(OUTCOME, pd.Series(index=runs.index, dtype=object)).fillna(INTERRUPTED)


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


def number(value: float, signed: bool = False) -> str:
    """Four decimals, three significant digits below 0.0001 (a vanishing gradient would read
    0.0000), a true minus, a plus too when ``signed`` (a difference), a dash for no value."""
    if pd.isna(value):
        return "—"
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    if value and abs(value) < 0.0001:
        text = f"{value:+.3g}" if signed else f"{value:.3g}"
    return minus(text)


def minus(text: str) -> str:
    """``text`` with a leading hyphen made a true minus, as typeset; an exponent's stays."""
    return "−" + text[1:] if text.startswith("-") else text


def interval(low: float, high: float, signed: bool = False) -> str:
    """``[low, high]``."""
    return f"[{number(low, signed)}, {number(high, signed)}]"


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings: the groups, ``mean ± std`` of the metric (the mean alone when
    one run completed, ``—`` when none did), its 95% CI (``n < 3`` without one), min, max,
    the counts, the difference from the best with its CI, its test (paired by seed or
    Welch), the verdict and the rank."""
    metric = table.attrs.get("metric", "metric")
    groups = table[group_columns(table)]
    shown = groups.astype(object).where(groups.notna(), "—").astype(str)
    shown[f"{metric} mean ± std"] = [
        number(m) if pd.isna(s) else f"{number(m)} ± {number(s)}"
        for m, s in zip(table["mean"], table["std"], strict=True)
    ]
    shown[f"{LEVEL:.0%} CI"] = [
        "—" if pd.isna(m) else FEW if pd.isna(low) else interval(low, high)
        for m, low, high in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
    ]
    shown["min"] = table["min"].map(number)
    shown["max"] = table["max"].map(number)
    for column in ("n", *COUNTS):
        shown[column] = table[column].astype(str)
    shown[f"vs best, {LEVEL:.0%} CI"] = [
        "—"
        if verdict == BEST or pd.isna(diff)
        else f"{number(diff, True)} " + (f"({FEW})" if pd.isna(low) else interval(low, high, True))
        for diff, low, high, verdict in zip(
            table["diff"], table["diff_low"], table["diff_high"], table["verdict"], strict=True
        )
    ]
    for column in ("test", "verdict"):
        shown[column] = table[column].map(lambda v: "—" if pd.isna(v) else v)
    shown["rank"] = table["rank"].map(lambda r: "—" if pd.isna(r) else str(r))
    return shown


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text: ``mean ± std`` of the metric, min, max, the counts and
    the rank."""
    return _shown(table).to_string(index=False)


def format_markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table, numbers right-aligned."""
    return markdown_table(_shown(table), {*group_columns(table), "test", "verdict"})


def markdown_table(shown: pd.DataFrame, groups: set[str]) -> str:
    """A table of strings as Markdown, left-aligned in the ``groups`` columns and
    right-aligned in the others. Written here rather than with ``DataFrame.to_markdown``,
    which needs ``tabulate`` for what is a few lines."""

    def row(cells: Iterable[str]) -> str:
        """One line of the table, with ``|`` in a cell escaped."""
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [
        row(shown.columns),
        row("---" if c in groups else "---:" for c in shown.columns),
        *(row(cells) for cells in shown.itertuples(index=False)),
    ]
    return "\n".join(lines) + "\n"


def conclusion(table: pd.DataFrame) -> str:
    """The sentence under the table: the best group against the next best mean, either
    indistinguishable from it or better, at this n, with the difference and its 95% CI and
    test, then the other groups tied with the best; empty with fewer than two means."""
    ranked = table[table["mean"].notna()].reset_index(drop=True)
    if len(ranked) < 2:
        return ""
    labels = group_labels(ranked, group_columns(ranked))
    best = int(ranked.index[ranked["verdict"] == BEST][0])
    others = ranked.drop(index=best)
    second = int(others.sort_values("mean", ascending=table.attrs["lower_is_better"]).index[0])
    row = ranked.loc[second]
    n = ranked.loc[best, "n"]
    at = f"n = {n}" if n == row["n"] else f"n = {n} and {row['n']}"
    if row["verdict"] == FEW:
        sentence = (
            f"{labels[best]} has the best mean, {number(abs(row['diff']))} ahead of "
            f"{labels[second]}, but at {at} there is no {LEVEL:.0%} CI ({FEW}) to say whether "
            "that is more than noise."
        )
    else:
        detail = (
            f"{labels[second]} − {labels[best]} = {number(row['diff'], True)}, {LEVEL:.0%} CI "
            f"{interval(row['diff_low'], row['diff_high'], True)}, {row['test']}"
        )
        claim = (
            f"{labels[best]} and {labels[second]} are indistinguishable"
            if row["verdict"] == TIED
            else f"{labels[best]} is better than {labels[second]}, the next best,"
        )
        sentence = f"{claim} at {at} ({detail})."
    tied = [labels[i] for i in others.index if i != second and others.loc[i, "verdict"] == TIED]
    return sentence + (f" Also tied with the best: {', '.join(tied)}." if tied else "")


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


def histories(uri: str, runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """``metric``'s history in every completed run, from MLflow: one row per run and epoch,
    with the run's ``by`` params (without ``params.``), ``run`` (its id), ``step`` and
    ``value``."""
    client = MlflowClient(tracking_uri=uri)
    completed = runs[outcomes(runs) == COMPLETED]
    return pd.DataFrame(
        [
            (*group, run_id, point.step, point.value)
            for *group, run_id in completed[[f"params.{p}" for p in by] + ["run_id"]].itertuples(
                index=False
            )
            for point in client.get_metric_history(run_id, metric)
        ],
        columns=[*by, "run", "step", "value"],
    )


def curves(uri: str, runs: pd.DataFrame, by: list[str], metric: str) -> pd.Series:
    """``metric``'s history per group and epoch, the mean over the group's completed runs
    (its seeds), indexed by (group label, step)."""
    history = histories(uri, runs, by, metric)
    history["group"] = group_labels(history, by)
    return history.groupby(["group", "step"])["value"].mean()


def draw(table: pd.DataFrame, curve: pd.Series, curve_name: str, title: str, path: Path) -> None:
    """Save the comparison figure at ``path``: on the left the metric's mean per group with
    its 95% CI as error bars (none, and a note, below 3 runs), best on top, each group's
    completed and lost runs and its verdict against the best under its name; on the right
    ``curve_name`` per epoch, one line per group in the same colour."""
    metric = table.attrs["metric"]
    direction = "lower" if table.attrs["lower_is_better"] else "higher"
    by = group_columns(table)
    labels = group_labels(table, by)
    # Past ten groups, tab20's paired shades; past twenty, the colours repeat with another
    # line style, so that no two groups look alike in the legend.
    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colors = [palette(i % palette.N) for i in range(len(labels))]
    styles = [STYLES[i // palette.N % len(STYLES)] for i in range(len(labels))]
    fig = Figure(figsize=(13, max(4.5, 0.55 * len(labels) + 2)), layout="constrained")
    FigureCanvasAgg(fig)
    bars, lines = fig.subplots(1, 2, width_ratios=[1, 1.25])

    ticks = []
    for label, row in zip(labels, table.itertuples(index=False), strict=True):
        lost = ", ".join(f"{getattr(row, c)} {c}" for c in COUNTS if getattr(row, c))
        verdict = f", {row.verdict}" if row.verdict in (BEST, TIED) else ""
        ticks.append(f"{label}\nn={row.n}" + (f", {lost}" if lost else "") + verdict)
    y = np.arange(len(labels))
    # A t interval is symmetric: its half-width is the error bar; NaN, none, below n = 3.
    half = table["ci_high"] - table["mean"]
    bars.barh(y, table["mean"], xerr=half, color=colors, capsize=4, alpha=0.85)
    for yi, mean, low in zip(y, table["mean"], table["ci_low"], strict=True):
        if pd.isna(mean):
            bars.text(0, yi, " no completed run", va="center", color="0.4")
        elif pd.isna(low):
            bars.text(mean, yi, f" {FEW}: no CI", va="center", color="0.3")
    bars.set_yticks(y, ticks)
    # Best on top, and room for a group with no bar at the bottom.
    bars.set_ylim(len(labels) - 0.5, -0.5)
    bars.set_xlabel(
        f"{metric}: mean, {LEVEL:.0%} CI (t, n − 1 df), completed runs; {direction} is better"
    )
    bars.set_title(f"{metric} by {', '.join(by)}: mean, error bars {LEVEL:.0%} CI")
    bars.grid(True, axis="x", alpha=0.3)

    # A metric logged once per run (test_*, train_seconds) has no curve to show.
    steps = curve.index.get_level_values("step").nunique()
    if steps < 2:
        note = f"{curve_name}: one value per run, no curve" if steps else f"no {curve_name} logged"
        lines.text(0.5, 0.5, note, ha="center", color="0.4", transform=lines.transAxes)
    else:
        for label, color, style in zip(labels, colors, styles, strict=True):
            if label in curve.index.get_level_values("group"):
                points = curve.loc[label]
                # MLflow's step is Keras's epoch index; the runner's figures count from 1.
                epochs = points.index + 1
                lines.plot(epochs, points.values, c=color, ls=style, marker="o", ms=3, label=label)
        # Many groups would hide the curves: their legend goes beside the axes instead.
        outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if len(labels) > 6 else {}
        lines.legend(title=", ".join(by), fontsize="small", **outside)
    if curve_name.startswith("grad_norm/"):
        # Vanishing gradients span orders of magnitude: on a linear axis they all read 0.
        lines.set_yscale("log")
    lines.set_xlabel("epoch")
    lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set_ylabel(f"{curve_name}, mean over completed runs")
    lines.set_title(f"{curve_name} per epoch")
    lines.grid(True, alpha=0.3)

    fig.suptitle(title)
    fig.savefig(path, dpi=120)


@dataclass
class Selection:
    """The runs to compare, what they are (``sweep multirun/…`` or ``experiment digits``)
    and, for a sweep, the parent runs that receive the comparison's files."""

    runs: pd.DataFrame
    label: str
    parents: list[str] = field(default_factory=list)


def find_sweep(where: str, sweep: str | None, experiment_ids: list[str] | None) -> pd.DataFrame:
    """The parent runs of one sweep (one per experiment it touched): the sweep whose parent
    started last, or the one that ``sweep`` names by its run name (the sweep directory as
    given), its id (the directory made absolute) or a path that resolves to that id, among
    the experiments ``experiment_ids`` (None: all of them, ``where`` names them in errors).
    When two sweeps share a name, the later one wins."""
    parents = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=f"tags.{ROLE} = 'sweep'",
        search_all_experiments=True,
        order_by=["attributes.start_time DESC"],
    )
    if parents.empty:
        raise UserError(
            f"no sweep in {where}: run one (make sweep), or compare an experiment's runs with "
            "--experiment NAME"
        )
    if sweep is None:
        sweep_id = parents[f"tags.{SWEEP_ID}"].iloc[0]
    else:
        ids = parents[f"tags.{SWEEP_ID}"]
        named = parents[
            (parents[RUN_NAME] == sweep) | ids.isin({sweep, str(Path(sweep).resolve())})
        ]
        if named.empty:
            recent = parents.drop_duplicates(f"tags.{SWEEP_ID}")[RUN_NAME].head(RECENT)
            raise UserError(f"no sweep {sweep!r} in {where}; the latest: {', '.join(recent)}")
        sweep_id = named[f"tags.{SWEEP_ID}"].iloc[0]
    return parents[parents[f"tags.{SWEEP_ID}"] == sweep_id]


def select(
    uri: str,
    sweep: str | None = None,
    experiment: str | None = None,
    filter_string: str | None = None,
) -> Selection:
    """The job runs to compare: the sweep ``sweep`` names, else the whole of ``experiment``,
    else the latest sweep; a sweep and an experiment together take the sweep's runs in that
    experiment, and ``filter_string`` (MLflow's syntax) narrows any of them. Raises
    :class:`UserError` when the store, sweep or experiment is missing or no run matches."""
    db = sqlite_path(uri)
    # MLflow would create an empty store at a mistyped path rather than say it is missing.
    if db is not None and not db.exists():
        raise UserError(f"no MLflow store at {db}: run a job or a sweep first (make sweep)")
    mlflow.set_tracking_uri(uri)
    try:
        # A SQLite store is opened here: a file that is no MLflow store fails at once.
        client = open_client(uri, WAY_OUT)
    except store_errors() as error:
        raise UserError(
            f"tracking store {uri} cannot be used: {reason(error)}. {WAY_OUT}"
        ) from None
    experiment_ids = None
    where = uri
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise UserError(f"no experiment {experiment!r} in {uri}; experiments: {names}")
        experiment_ids = [found.experiment_id]
        where = f"experiment {experiment}"
    clauses = [f"tags.{ROLE} = 'job'"]
    selection = Selection(pd.DataFrame(), where)
    if sweep is not None or experiment is None:
        parents = find_sweep(where, sweep, experiment_ids)
        clauses.append(f"tags.{SWEEP_ID} = {quoted(parents[f'tags.{SWEEP_ID}'].iloc[0])}")
        selection.label = f"sweep {parents[RUN_NAME].iloc[0]}" + (
            f" in experiment {experiment}" if experiment else ""
        )
        selection.parents = parents["run_id"].tolist()
    if filter_string:
        clauses.append(filter_string)
    try:
        selection.runs = mlflow.search_runs(
            experiment_ids=experiment_ids,
            filter_string=" and ".join(clauses),
            search_all_experiments=True,
        )
    except MlflowException as error:
        raise UserError(
            f"cannot search {uri} for {' and '.join(clauses)}: {error.message}"
        ) from None
    if selection.runs.empty:
        matching = f" matching {filter_string!r}" if filter_string else ""
        raise UserError(f"no job runs{matching} in {selection.label}")
    return selection


def at_step(uri: str, runs: pd.DataFrame, metric: str, step: int) -> pd.DataFrame:
    """The runs with ``metric`` replaced by its value at ``step`` (an epoch index, from 0)
    instead of its last value: early epochs are where vanishing gradients show."""
    client = MlflowClient(tracking_uri=uri)
    values = []
    for run_id in runs["run_id"]:
        points = {p.step: p.value for p in client.get_metric_history(run_id, metric)}
        values.append(points.get(step, np.nan))
    return runs.assign(**{f"metrics.{metric}": values})


def check(runs: pd.DataFrame, label: str, metric: str, by: list[str] | None) -> None:
    """Raise :class:`UserError` naming what is there when ``metric`` or a param of ``by`` is
    not among the runs'."""

    def logged(prefix: str) -> list[str]:
        """The names of the runs' columns that start with ``prefix``, without it."""
        return sorted(c.removeprefix(prefix) for c in runs.columns if c.startswith(prefix))

    if metric not in logged("metrics."):
        available = ", ".join(logged("metrics.")) or "none"
        raise UserError(f"no metric {metric!r} in the runs of {label}; metrics: {available}")
    unknown = [p for p in by or [] if p not in logged("params.")]
    if unknown:
        params = ", ".join(logged("params."))
        raise UserError(f"no param {', '.join(unknown)} in the runs of {label}; params: {params}")


def tune(
    runs: pd.DataFrame, label: str, by: list[str] | None, key: str, metric: str, lower: bool | None
) -> tuple[pd.DataFrame, list[str], str]:
    """The runs of each group's chosen value of the param ``key``: for each combination of
    ``by`` (default: the params that vary, ``key`` aside), the value whose runs have the
    best mean last-epoch validation twin of ``metric`` (``val_accuracy`` for
    ``test_accuracy``), among the values with the fewest lost runs (:func:`pick_tuned`).
    Test metrics play no part. Returns those runs, ``by`` with ``key`` last, and a sentence
    naming each group's choice. Raises :class:`UserError` when ``key`` is no param or is in
    ``by``, or ``metric`` has no validation twin."""
    check(runs, label, metric, [key])
    logged = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    score = curve_metric(metric, logged)
    if not score.startswith("val_"):
        raise UserError(
            f"--tune chooses on a validation metric, and {metric} has no val_ twin in the runs "
            f"of {label}"
        )
    by = by or [p for p in varying_params(runs) if p != key] or ["activation"]
    if key in by:
        raise UserError(f"--tune {key} chooses one value per group of --by: drop it from --by")
    keys, column = [f"params.{p}" for p in by], f"params.{key}"
    runs = runs.assign(**{k: np.nan for k in keys if k not in runs.columns})
    lost = outcomes(runs) != COMPLETED
    frame = runs[[*keys, column]].assign(score=runs[f"metrics.{score}"].where(~lost), lost=lost)
    lower = lower_is_better(score) if lower is None else lower
    chosen = pick_tuned(frame, keys, column, lower)
    picked = runs.merge(chosen[[*keys, column]], on=[*keys, column])
    choices = ", ".join(
        f"{label} {value} ({number(mean)}" + (f", {count} lost" if count else "") + ")"
        for label, value, mean, count in zip(
            group_labels(chosen, keys), chosen[column], chosen["score"], chosen["lost"], strict=True
        )
    )
    sentence = (
        f"`{key}` chosen per group by the best mean last-epoch `{score}` (test metrics not "
        f"consulted; {len(picked)} of {len(runs)} runs): {choices}."
    )
    return picked, [*by, key], sentence


def parse_speed(text: str, runs: pd.DataFrame, label: str) -> tuple[str, float]:
    """``--speed METRIC=THRESHOLD`` as the metric and the threshold. Raises
    :class:`UserError` when it is not of that form or the runs never logged the metric."""
    name, _, value = text.partition("=")
    try:
        level = float(value)
    except ValueError:
        raise UserError(
            f"--speed {text!r}: give METRIC=THRESHOLD, such as val_accuracy=0.95"
        ) from None
    check(runs, label, name, None)
    return name, level


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


def format_speed(pace: pd.DataFrame, markdown: bool) -> str:
    """The speed table under the sentence that says what its columns are: as Markdown, or
    as aligned text."""
    name, level = pace.attrs["metric"], pace.attrs["level"]
    op = "≤" if pace.attrs["lower_is_better"] else "≥"
    by = list(pace.columns[: list(pace.columns).index("runs")])
    shown = pace[by].astype(object).where(pace[by].notna(), "—").astype(str)
    shown["runs"] = pace["runs"].fillna(0).astype(int).astype(str)
    shown["never"] = pace["never"].fillna(0).astype(int).astype(str)

    def cell(mean: float, low: float, high: float, digits: int) -> str:
        """``mean [low, high]``, ``mean (n < 3)``, or ``—`` without a mean."""
        if pd.isna(mean):
            return "—"
        if pd.isna(low):
            return f"{mean:.{digits}f} ({FEW})"
        low, high = minus(f"{low:.{digits}f}"), minus(f"{high:.{digits}f}")
        return f"{mean:.{digits}f} [{low}, {high}]"

    shown[f"first epoch {op} {level:g}"] = [
        "never" if runs and runs == never else cell(first, low, high, 2)
        for runs, never, first, low, high in pace[
            ["runs", "never", "first", "first_low", "first_high"]
        ].to_numpy()
    ]
    shown[f"{name} area / epochs"] = [
        cell(*values, 4) for values in pace[["area", "area_low", "area_high"]].to_numpy()
    ]
    note = (
        f"Speed: the first epoch (from 1) whose `{name}` is {op} {level:g}, mean and "
        f"{LEVEL:.0%} CI over the runs that got there (`never`: the runs that did not); the "
        f"area under each run's `{name}` curve divided by its epochs, mean and {LEVEL:.0%} CI "
        "over every run."
    )
    if markdown:
        return f"{note}\n\n{markdown_table(shown, set(by))}"
    return f"{note.replace('`', '')}\n{shown.to_string(index=False)}"


def write(
    uri: str,
    selection: Selection,
    table: pd.DataFrame,
    heading: str,
    out: Path,
    notes: list[str],
    pace: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``comparison.md`` (``heading``, the table, the ``notes`` under it and the
    speed table ``pace``), ``comparison.csv`` (groups and numbers), ``comparison.png`` (see
    :func:`draw`) and, with ``pace``, ``speed.csv`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    metric = table.attrs["metric"]
    by = group_columns(table)
    available = [c.removeprefix("metrics.") for c in selection.runs.columns]
    curve_name = curve_metric(metric, available)
    markdown, csv, png = out / "comparison.md", out / "comparison.csv", out / "comparison.png"
    sections = [heading, format_markdown(table).rstrip(), *filter(None, notes)]
    if pace is not None:
        sections.append(format_speed(pace, markdown=True).rstrip())
    markdown.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    table.to_csv(csv, index=False)
    curve = curves(uri, selection.runs, by, curve_name)
    draw(table, curve, curve_name, heading.replace("`", ""), png)
    if pace is None:
        return [markdown, csv, png]
    pace.to_csv(out / "speed.csv", index=False)
    return [markdown, csv, png, out / "speed.csv"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m runner.compare``."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.compare",
        description="Compare MLflow runs: one row per combination of params, the metric's "
        "mean ± std over the completed runs, the lost runs and the rank; written as Markdown, "
        "CSV and a figure, and logged to the sweep's parent runs.",
    )
    parser.add_argument(
        "--sweep",
        help="a sweep's name (multirun/DATE/TIME-PID) or id (its absolute directory); "
        "default: the latest sweep",
    )
    parser.add_argument("--experiment", help="every job run of this experiment")
    parser.add_argument(
        "--filter", help="an MLflow filter that narrows the runs: \"params.loss = 'mse'\""
    )
    parser.add_argument(
        "--by", help="comma-separated params to group by; default: the params that vary"
    )
    parser.add_argument(
        "--metric",
        help="any logged metric, its last value for a per-epoch one; default: test_accuracy, "
        "or test_rmse for regression",
    )
    parser.add_argument(
        "--step",
        type=int,
        help="take a per-epoch metric at this epoch index (0 is the first) instead of its "
        "last value",
    )
    parser.add_argument(
        "--tune",
        metavar="PARAM",
        help="a swept param (optimizer.learning_rate): for each group of --by, keep only the "
        "runs of the value with the best mean last-epoch validation metric (val_accuracy for "
        "test_accuracy) and report their test metric; the test metric never picks",
    )
    parser.add_argument(
        "--speed",
        metavar="METRIC=LEVEL",
        help="per group, the first epoch whose METRIC reaches LEVEL (at or below it for a loss "
        "or an error) and the area under METRIC's curve per epoch: val_accuracy=0.95",
    )
    parser.add_argument(
        "--lower-is-better",
        action=argparse.BooleanOptionalAction,
        help="rank the smallest mean first (or, with --no-lower-is-better, the largest); "
        "default: lower for losses, errors and seconds, higher for anything else",
    )
    parser.add_argument("--out", default="comparison", help="output folder (default: %(default)s)")
    parser.add_argument("--uri", help="MLflow tracking URI; default: as the runner tracks")
    return parser.parse_args(argv)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be a directory before searching the store: a file
    at its place or at one of the folders above it."""
    existing = next(path for path in (out, *out.absolute().parents) if path.exists())
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be made: {existing} is a file"
        raise UserError(
            f"--out {out} {what}, not a directory. Give a directory, existing or new, for "
            "the comparison's files."
        )


def main(argv: list[str] | None = None) -> int:
    """Compare the runs the command line picks: print the table, write the files into
    ``--out``, log them to the sweep's parent runs. A missing or unusable store, sweep,
    experiment, metric or param, no matching run, or an ``--out`` that is a file, is one
    line on stderr and exit code 2."""
    args = parse_args(argv)
    uri = args.uri or tracking_uri(None)
    by = [p.strip() for p in args.by.split(",")] if args.by else None
    notes, speed_args = [], None
    try:
        check_out(Path(args.out))
        selection = select(uri, args.sweep, args.experiment, args.filter)
        metric = args.metric or default_metric(selection.runs)
        check(selection.runs, selection.label, metric, by)
        if args.tune:
            selection.runs, by, chosen = tune(
                selection.runs, selection.label, by, args.tune, metric, args.lower_is_better
            )
            notes.append(chosen)
        if args.speed:
            speed_args = parse_speed(args.speed, selection.runs, selection.label)
    except UserError as error:
        print(f"compare: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if args.step is not None:
        selection.runs = at_step(uri, selection.runs, metric, args.step)
        metric_label = f"{metric} at epoch {args.step + 1}"
    else:
        metric_label = metric
    table = summarize(selection.runs, by, metric, args.lower_is_better)
    direction = "lower" if table.attrs["lower_is_better"] else "higher"
    heading = (
        f"{selection.label}: {len(selection.runs)} runs, `{metric_label}` ({direction} is better)"
        + (f", filter `{args.filter}`" if args.filter else "")
        + (f", `{args.tune}` picked per group on validation" if args.tune else "")
    )
    notes.insert(0, conclusion(table))
    pace = speed_table(uri, selection.runs, table, *speed_args) if speed_args else None
    print(heading.replace("`", ""))
    print(format_table(table))
    for note in filter(None, notes):
        print(note.replace("`", ""))
    if pace is not None:
        print(format_speed(pace, markdown=False))
    paths = write(uri, selection, table, heading, Path(args.out), notes, pace)
    client = MlflowClient(tracking_uri=uri)
    for run_id in selection.parents:
        for path in paths:
            client.log_artifact(run_id, str(path), "comparison")
    logged = f"; logged to parent run {', '.join(selection.parents)}" if selection.parents else ""
    print(f"wrote {', '.join(map(str, paths))}{logged}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
