"""``python -m runner.compare``: pick the runs, check the options against them, print the
table and write its files, and log them to the sweep's parent runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from runner.compare.figure import draw
from runner.compare.report import conclusion, format_markdown, format_speed, format_table, number
from runner.compare.runs import Selection, at_step, outcomes, select
from runner.compare.table import (
    curve_metric,
    curves,
    default_metric,
    group_columns,
    group_labels,
    speed_table,
    summarize,
    varying_params,
)
from runner.config import UserError
from runner.metrics import lower_is_better
from runner.stats import pick_tuned
from runner.tracking import COMPLETED, Reader, tracking_uri


def check_columns(runs: pd.DataFrame, label: str, metric: str, by: list[str] | None) -> None:
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
    check_columns(runs, label, metric, [key])
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
    check_columns(runs, label, name, None)
    return name, level


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
        check_columns(selection.runs, selection.label, metric, by)
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
    reader = Reader(uri)
    for run_id in selection.parents:
        reader.log_files(run_id, paths, "comparison")
    logged = f"; logged to parent run {', '.join(selection.parents)}" if selection.parents else ""
    print(f"wrote {', '.join(map(str, paths))}{logged}", file=sys.stderr)
    return 0
