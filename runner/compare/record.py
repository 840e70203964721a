"""The comparison's record: its files (Markdown, CSV, figures), and what a sweep's parent
run keeps of it for the MLflow UI, the description (a Markdown table within MLflow's
8,000 characters), metrics per group and a table artifact.

:func:`summary` builds what the parent gets, as a pure function;
:meth:`runner.tracking.Reader.record` hands it to the store; :func:`record_sweep` is what
the end of a sweep does."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from runner.compare.figure import draw, draw_pairs
from runner.compare.report import (
    conclusion,
    format_markdown,
    format_pairs,
    format_speed,
    format_table,
    markdown_table,
    methods,
    power,
    shown,
)
from runner.compare.runs import OUTCOME, Histories, distinct, sweep_runs
from runner.compare.table import (
    COUNTS,
    curve_metric,
    curves,
    group_columns,
    seed_values,
    summarize,
)
from runner.stats.intervals import LEVEL
from runner.sweep import SweepReport
from runner.tracking import FAILED, Reader
from runner.tracking.ui import ui_line

# MLflow keeps at most this many characters of a tag, the description included, and cuts
# a longer one with a warning.
NOTE_LIMIT = 8000
# The artifact folder of a sweep's own comparison, and the start of an ad-hoc one's.
SWEEP_FOLDER = "comparison"
COMPARE_FOLDER = "compare"
PARENT = "tags.mlflow.parentRunId"
# The files that one comparison may write; those it does not write this time are removed
# from its folder, so that the folder never mixes two comparisons.
OPTIONAL_FILES = ("speed.csv", "pairs.csv", "pairs.png")


class Summary(NamedTuple):
    """What a parent run shows of a comparison: its description (Markdown) and metrics."""

    note: str
    metrics: dict[str, float]


def metric_group(values: tuple) -> str:
    """A group's name in its MLflow metrics' names: the param values joined by ``-``, with
    what MLflow refuses in a name (the brackets and commas of ``[64, 64]``) made ``_``."""
    parts = [re.sub(r"[^\w.\-]+", "_", str(v).strip("[]()'\" ")) or "_" for v in values]
    return "-".join(parts)


def group_metrics(table: pd.DataFrame, name: str) -> dict[str, float]:
    """Each group's mean, interval and completed runs as metrics, ``GROUP/NAME_mean``,
    ``_low``, ``_high`` and ``_n`` (``relu-mse/test_accuracy_mean``; ``name`` is the metric,
    or ``val_accuracy_epoch1`` for one epoch's): the group first, so that the UI lists each
    group's statistics together. NaN where there is none. Two groups whose names MLflow
    would read alike get a number each, so that neither overwrites the other."""
    found: dict[str, float] = {}
    width = len(group_columns(table))
    for i, row in enumerate(table.itertuples(index=False)):
        group = metric_group(tuple(row[:width]))
        if f"{group}/{name}_mean" in found:
            group += f"-{i + 1}"
        for stat, value in {"mean": row.mean, "low": row.ci_low, "high": row.ci_high}.items():
            found[f"{group}/{name}_{stat}"] = float(value)
        found[f"{group}/{name}_n"] = float(row.n)
    return found


def _compact(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings (:func:`shown`) in fewer columns, for the description: the
    groups, ``mean ± std``, its CI, ``n``, the lost runs, the difference from the best with
    its CI, the Holm-adjusted p-value, the verdict and the rank."""
    full = shown(table)
    groups = list(full.columns[: len(group_columns(table))])
    compact = full[[*groups, *full.columns[len(groups) : len(groups) + 2], "n"]].copy()
    compact["lost"] = table[list(COUNTS)].sum(axis=1).astype(str)
    compact["vs best"] = full[f"vs best, {LEVEL:.0%} CI"]
    return compact.join(full[["p (Holm)", "verdict", "rank"]])


def _note(
    compact: pd.DataFrame,
    left: set[str],
    rows: list[int],
    heading: str,
    tail: list[str],
    folder: str,
) -> str:
    """The description with the table's ``rows`` (positions, shown in the table's order;
    the ``left`` columns left-aligned), and a line that says so when that is not all."""
    table = markdown_table(compact.iloc[sorted(rows)], left).rstrip()
    cut = []
    if len(rows) < len(compact):
        cut = [
            f"The best {len(rows)} of {len(compact)} groups, by rank; every group is in the "
            f"artifact `{folder}/comparison.md`."
        ]
    return "\n\n".join([heading, table, *cut, *tail])


def summary(table: pd.DataFrame, heading: str, notes: list[str], folder: str) -> Summary:
    """The description and metrics of a parent run for the summary ``table`` under
    ``heading``: the table as Markdown, a line naming the artifact ``folder`` that holds
    the whole comparison, the ``notes`` (the methods, the power) and last the verdict
    sentences (:func:`conclusion`). Within :data:`NOTE_LIMIT`: a table too long keeps its
    best rows, by rank, and says so; should the sentences alone be too long, they are cut
    and say so. The metrics are :func:`group_metrics` of ``table.attrs["metric_name"]``
    (or the metric)."""
    compact = _compact(table)
    left = {*group_columns(table), "verdict"}
    tail = [f"The whole comparison, its figure and its table: artifacts `{folder}/`."]
    tail += list(filter(None, [*notes, conclusion(table)]))
    # Best first across datasets: rank 1 of each, then rank 2 of each...
    order = table["rank"].astype(float).fillna(float("inf")).sort_values(kind="stable").index
    rows = [table.index.get_loc(i) for i in order]
    note = _note(compact, left, rows, heading, tail, folder)
    if len(note) > NOTE_LIMIT:
        # With the line about the cut, the longer the table the longer the note.
        low, high = 0, len(rows) - 1
        while low < high:
            middle = (low + high + 1) // 2
            fits = len(_note(compact, left, rows[:middle], heading, tail, folder)) <= NOTE_LIMIT
            low, high = (middle, high) if fits else (low, middle - 1)
        note = _note(compact, left, rows[:low], heading, tail, folder)
    if len(note) > NOTE_LIMIT:
        marker = f"\n\n(Cut at MLflow's {NOTE_LIMIT:,} characters: see `{folder}/comparison.md`.)"
        note = note[: NOTE_LIMIT - len(marker)] + marker
    name = table.attrs.get("metric_name", table.attrs["metric"])
    return Summary(note, group_metrics(table, name))


def write(
    out: Path,
    histories: Histories,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    heading: str,
    notes: list[str],
    pace: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the comparison into ``out``: ``comparison.md`` (``heading``, the table, the
    ``notes`` under it, the speed table ``pace`` and every pair ``pairs``),
    ``comparison.csv`` (groups and numbers), ``comparison.png`` (see :func:`draw`), and
    with ``pace`` ``speed.csv``, with ``pairs`` ``pairs.csv`` and ``pairs.png``; remove
    those two's files left there by an earlier comparison. Returns the files' paths."""
    out.mkdir(parents=True, exist_ok=True)
    metric = table.attrs["metric"]
    by = group_columns(table)
    available = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    curve_name = curve_metric(metric, available)
    sections = [heading, format_markdown(table).rstrip(), *filter(None, notes)]
    paths = [out / "comparison.md", out / "comparison.csv", out / "comparison.png"]
    if pace is not None:
        sections.append(format_speed(pace, markdown=True).rstrip())
        pace.to_csv(out / "speed.csv", index=False)
        paths.append(out / "speed.csv")
    if pairs is not None:
        sections.append(format_pairs(pairs, markdown=True).rstrip())
        pairs.to_csv(out / "pairs.csv", index=False)
        draw_pairs(pairs, table, heading.replace("`", ""), out / "pairs.png")
        paths += [out / "pairs.csv", out / "pairs.png"]
    paths[0].write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    table.to_csv(paths[1], index=False)
    curve = curves(histories, runs, by, curve_name)
    draw(table, seed_values(runs, table), curve, curve_name, heading.replace("`", ""), paths[2])
    for name in OPTIONAL_FILES:
        if out / name not in paths:
            (out / name).unlink(missing_ok=True)
    return paths


def record_sweep(uri: str, runs: pd.DataFrame, table: pd.DataFrame, name: str) -> str:
    """Put the summary ``table`` of the sweep ``name``, whose job runs are ``runs``, on
    each of its parent runs (one per experiment): its files and table artifact in the
    folder ``comparison`` (or ``comparison-2``... when an earlier end of the sweep wrote
    one), its metrics and its description. Returns the parent of the first run."""
    kept = distinct(runs)
    direction = "lower" if table.attrs["lower_is_better"] else "higher"
    aside = kept.attrs["set_aside"]
    heading = (
        f"sweep {name}: {len(runs)} runs, `{table.attrs['metric']}` ({direction} is better)"
        + (f", {aside} repeated runs set aside" if aside else "")
    )
    notes = [methods(table), power(table)]
    reader = Reader(uri)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write(Path(tmp), Histories(uri), kept, table, heading, [conclusion(table), *notes])
        for parent in dict.fromkeys(runs[PARENT].dropna()):
            folder = reader.free_folder(parent, SWEEP_FOLDER)
            ui = summary(table, heading, notes, folder)
            reader.record(parent, folder, paths, table, ui.metrics, ui.note)
    return runs[PARENT].iloc[0]


def report_sweep(uri: str, sweep_id: str, name: str) -> SweepReport:
    """Read the job runs of the sweep ``sweep_id`` (named ``name``) from the store ``uri``,
    sum them up, and put the summary on the sweep's parent runs (:func:`record_sweep`),
    where the UI shows it on each parent's page: description, metrics, files."""
    runs = sweep_runs(uri, sweep_id)
    if runs.empty:
        return SweepReport(0, 0, "", None)
    table = summarize(distinct(runs))
    parent_id = record_sweep(uri, runs, table, name)
    link = ui_line(uri, runs.iloc[0]["experiment_id"], parent_id)
    failed = int(runs[OUTCOME].eq(FAILED).sum())
    return SweepReport(len(runs), failed, format_table(table), link)
