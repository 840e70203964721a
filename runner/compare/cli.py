"""``python -m runner.compare``: pick the runs, check the options against them, print the
table and write its files, and record them on the sweep's parent runs."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from runner.compare.best import BEST, LAST, at_best
from runner.compare.record import COMPARE_FOLDER, summary, write
from runner.compare.report import (
    conclusion,
    format_pairs,
    format_speed,
    format_table,
    methods,
    number,
    power,
)
from runner.compare.runs import Histories, Selection, at_step, outcomes, select
from runner.compare.table import (
    curve_metric,
    default_metric,
    group_labels,
    pairs_table,
    speed_table,
    summarize,
    varying_params,
)
from runner.config import UserError
from runner.metrics import lower_is_better
from runner.stats.intervals import MEAN, TESTS
from runner.stats.tuning import pick_tuned
from runner.tracking import COMPLETED, Reader, tracking_uri


def check_columns(runs: pd.DataFrame, label: str, metric: str | None, by: list[str] | None) -> None:
    """Raise :class:`UserError` naming what is there when ``metric`` (unless None) or a
    param of ``by`` is not among the runs'."""

    def logged(prefix: str) -> list[str]:
        """The names of the runs' columns that start with ``prefix``, without it."""
        return sorted(c.removeprefix(prefix) for c in runs.columns if c.startswith(prefix))

    if metric is not None and metric not in logged("metrics."):
        available = ", ".join(logged("metrics.")) or "none"
        raise UserError(f"no metric {metric!r} in the runs of {label}; metrics: {available}")
    unknown = [p for p in by or [] if p not in logged("params.")]
    if unknown:
        params = ", ".join(logged("params."))
        raise UserError(f"no param {', '.join(unknown)} in the runs of {label}; params: {params}")


def tune(
    runs: pd.DataFrame,
    label: str,
    by: list[str] | None,
    key: str,
    metric: str,
    lower: bool | None,
    at: str = LAST,
) -> tuple[pd.DataFrame, list[str], str]:
    """The runs of each group's chosen value of the param ``key``: for each combination of
    ``by`` (default: the params that vary, ``key`` aside), the value whose runs have the
    best mean validation twin of ``metric`` (``val_accuracy`` for ``test_accuracy``), as the
    runs hold it (``at`` says which epoch: ``last``, or ``best`` for its best value), among
    the values with the fewest lost runs (:func:`pick_tuned`). Test metrics play no part.
    Returns those runs, ``by`` with ``key`` last, and a sentence
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
        f"`{key}` chosen per group by the best mean {at}-epoch `{score}` (test metrics not "
        f"consulted; {len(picked)} of {len(runs)} runs): {choices}."
    )
    return picked, [*by, key], sentence


def parse_speed(text: str, runs: pd.DataFrame, label: str) -> tuple[str, float]:
    """``--speed METRIC=LEVEL`` as the metric and the level. Raises :class:`UserError` when
    it is not of that form, the level is no finite number (``nan`` would never be reached
    and ``inf`` always), or the runs never logged the metric."""
    name, _, value = text.partition("=")
    try:
        level = float(value)
    except ValueError:
        level = math.nan
    if not math.isfinite(level):
        raise UserError(
            f"--speed {text!r}: give METRIC=THRESHOLD, the threshold a finite number, such as "
            "val_accuracy=0.95"
        )
    check_columns(runs, label, name, None)
    return name, level


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m runner.compare``."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.compare",
        description="Compare MLflow runs: one row per combination of params, the metric's "
        "mean with its 95% interval over the completed runs, the lost runs, the verdict "
        "against the best and the rank; written as Markdown, "
        "CSV and a figure, and logged to the sweep's parent runs.",
    )
    _which_runs(parser)
    _how_compared(parser)
    parser.add_argument("--out", default="comparison", help="output folder (default: %(default)s)")
    parser.add_argument("--uri", help="MLflow tracking URI; default: as the runner tracks")
    return parser.parse_args(argv)


def _which_runs(parser: argparse.ArgumentParser) -> None:
    """The options that pick the runs, their groups and the metric."""
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
        "--at",
        choices=(LAST, BEST),
        default=LAST,
        help="last (default): each run's last epoch; best: each run at its best validation "
        "epoch (by the metric's val_ twin, else val_loss), its test metric that of the "
        "restored best weights where the run restored them, else of the last epoch's",
    )
    parser.add_argument(
        "--tune",
        metavar="PARAM",
        help="a swept param (optimizer.learning_rate): for each group of --by, keep only the "
        "runs of the value with the best mean last-epoch validation metric (val_accuracy for "
        "test_accuracy) and report their test metric; the test metric never picks",
    )


def _how_compared(parser: argparse.ArgumentParser) -> None:
    """The options that pick the tests, their direction and the speed measure."""
    parser.add_argument(
        "--speed",
        metavar="METRIC=LEVEL",
        help="per group, the first epoch whose METRIC reaches LEVEL (at or below it for a loss "
        "or an error) and the area under METRIC's curve per epoch: val_accuracy=0.95",
    )
    parser.add_argument(
        "--test",
        choices=TESTS,
        default=MEAN,
        help="how each group is tested against the best: mean (default), the difference of "
        "means by paired t (Welch's t unpaired) below 10 seeds and the bootstrap from 10; "
        "wilcoxon, the paired Wilcoxon signed-rank test (Mann-Whitney U unpaired)",
    )
    parser.add_argument(
        "--pairs",
        choices=("best", "all"),
        default="best",
        help="best (default): each group against the best; all: also every pair of groups, "
        "Holm-adjusted over all the pairs, as a table and a matrix figure (pairs.png)",
    )
    parser.add_argument(
        "--power",
        metavar="DELTA",
        type=float,
        help="say how many seeds per group would tell apart a difference of DELTA (80%% "
        "power at the 5%% level), from the spread these runs show",
    )
    parser.add_argument(
        "--lower-is-better",
        action=argparse.BooleanOptionalAction,
        help="rank the smallest mean first (or, with --no-lower-is-better, the largest); "
        "default: lower for losses, errors, seconds and dead or saturated fractions, higher "
        "for anything else",
    )


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


@dataclass
class Request:
    """What the command line asks for, checked against the runs: the runs, the params to
    group by, the metric (``label`` names it in the heading, ``name`` in the parent's
    metrics: ``val_accuracy_epoch1`` with ``--step 0``), the speed's metric and level, and
    the sentences that go under the table."""

    selection: Selection
    by: list[str] | None
    metric: str
    label: str
    name: str
    speed: tuple[str, float] | None = None
    notes: list[str] = field(default_factory=list)


def request(args: argparse.Namespace, uri: str, histories: Histories) -> Request:
    """Pick the runs and check every option against them, before anything is written.
    Raises :class:`UserError` for what cannot be compared."""
    check_out(Path(args.out))
    if args.power is not None and not (math.isfinite(args.power) and args.power > 0):
        raise UserError(f"--power {args.power}: give the difference to tell apart, above 0")
    by = [p.strip() for p in args.by.split(",")] if args.by else None
    selection = select(uri, args.sweep, args.experiment, args.filter)
    metric = args.metric or default_metric(selection.runs)
    # A default metric that no run logged (a sweep whose jobs all failed) still gives the
    # table of what became of the runs.
    check_columns(selection.runs, selection.label, args.metric, by)
    asked = Request(selection, by, metric, metric, metric)
    if args.at == BEST:
        best(args, asked, histories)
    if args.tune:
        selection.runs, asked.by, chosen = tune(
            selection.runs, selection.label, by, args.tune, metric, args.lower_is_better, args.at
        )
        asked.notes.append(chosen)
    if args.speed:
        asked.speed = parse_speed(args.speed, selection.runs, selection.label)
    if args.step is not None:
        selection.runs = at_step(histories, selection.runs, metric, args.step)
        asked.label = f"{metric} at epoch {args.step + 1}"
        asked.name = f"{metric}_epoch{args.step + 1}"
    return asked


def best(args: argparse.Namespace, asked: Request, histories: Histories) -> None:
    """Take ``asked``'s runs at their best validation epochs (:func:`at_best`), and the
    validation metric that ``--tune`` picks on at its best too. Raises :class:`UserError`
    with ``--step``, which picks the epoch otherwise."""
    if args.step is not None:
        raise UserError("--at best and --step each pick the epoch to compare at: give one")
    selection = asked.selection
    columns = selection.runs.columns
    logged = [c.removeprefix("metrics.") for c in columns if c.startswith("metrics.")]
    selection.runs, asked.label, sentence = at_best(histories, selection.runs, asked.metric, logged)
    asked.name = f"{asked.metric}_best"
    asked.notes.append(sentence)
    score = curve_metric(asked.metric, logged)
    if args.tune and score != asked.metric and score.startswith("val_"):
        selection.runs = at_best(histories, selection.runs, score, logged)[0]


def heading(args: argparse.Namespace, asked: Request, table: pd.DataFrame) -> str:
    """The line above the table: the runs, the metric, its direction, and what narrowed
    the runs or set some aside."""
    direction = "lower" if table.attrs["lower_is_better"] else "higher"
    aside = asked.selection.set_aside
    return (
        f"{asked.selection.label}: {len(asked.selection.runs)} runs, `{asked.label}` "
        f"({direction} is better)"
        + (f", filter `{args.filter}`" if args.filter else "")
        + (f", `{args.tune}` picked per group on validation" if args.tune else "")
        + (f", {aside} repeated runs set aside (the same fingerprint)" if aside else "")
    )


def record(
    uri: str,
    args: argparse.Namespace,
    asked: Request,
    table: pd.DataFrame,
    title: str,
    notes: list[str],
    paths: list[Path],
) -> str:
    """Record the comparison on the sweep's parent runs, in an artifact folder of its own
    (``compare-DATE-TIME``), so that it never replaces the sweep's own record: with its
    metrics per group, unless ``--filter`` or ``--tune`` narrowed the runs (the parent's
    metrics stand for the whole sweep), and as the description only where the sweep's end
    wrote none. Returns what to say about it."""
    parents = asked.selection.parents
    if not parents:
        return ""
    reader = Reader(uri)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    narrowed = bool(args.filter or args.tune)
    said = []
    for parent in parents:
        folder = reader.free_folder(parent, f"{COMPARE_FOLDER}-{stamp}")
        ui = summary(table, title, notes, folder)
        description = ui.note if reader.description(parent) is None else None
        reader.record(parent, folder, paths, table, {} if narrowed else ui.metrics, description)
        described = "" if description is None else ", and as its description"
        said.append(f"{parent}, artifacts {folder}/{described}")
    return f"; logged to parent run {', '.join(said)}" + (
        "; no metrics: the runs were narrowed" if narrowed else ""
    )


def main(argv: list[str] | None = None) -> int:
    """Compare the runs the command line picks: print the table, write the files into
    ``--out``, record them on the sweep's parent runs. A missing or unusable store, sweep,
    experiment, metric, param, step or level, no matching run, or an ``--out`` that is a
    file, is one line on stderr and exit code 2, and nothing is written."""
    args = parse_args(argv)
    uri = tracking_uri(args.uri)
    histories = Histories(uri)
    try:
        asked = request(args, uri, histories)
    except UserError as error:
        print(f"compare: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    runs = asked.selection.runs
    table = summarize(runs, asked.by, asked.metric, args.lower_is_better, args.test)
    table.attrs["metric_name"] = asked.name
    title = heading(args, asked, table)
    notes = [*asked.notes, methods(table), power(table, args.power)]
    pace = speed_table(histories, runs, table, *asked.speed) if asked.speed else None
    pairs = pairs_table(runs, table) if args.pairs == "all" else None
    text = [conclusion(table), *notes]
    print(title.replace("`", ""))
    print(format_table(table))
    for note in filter(None, text):
        print(note.replace("`", ""))
    if pace is not None:
        print(format_speed(pace, markdown=False))
    if pairs is not None:
        print(format_pairs(pairs, markdown=False))
    paths = write(Path(args.out), histories, runs, table, title, text, pace, pairs)
    logged = record(uri, args, asked, table, title, notes, paths)
    print(f"wrote {', '.join(map(str, paths))}{logged}", file=sys.stderr)
    return 0
