"""The comparison's figures: each group's seeds over its mean and interval, with its curve
per epoch and the seeds' band; and every pair's difference as a matrix."""

from __future__ import annotations

import itertools
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from runner.compare.report import minus
from runner.compare.table import COUNTS, group_columns, group_labels
from runner.stats.intervals import ALPHA, BEST, FEW, LEVEL, TIED

STYLES = ("-", "--", ":", "-.")
# The longest group name a figure shows whole; a longer one keeps its two ends.
LABEL = 40
# A list as a label writes it: ``[256, 256, 128]``, ``['relu', 'tanh']``.
LIST = re.compile(r"\[([^\[\]]*)\]")
# zlib's fastest level: twice as fast as matplotlib's default, for a file 8% larger.
FAST_PNG = {"compress_level": 1}
# Up to this many groups, each cell of the pairs' matrix shows its difference in figures.
ANNOTATED = 12


def headline(fig: Figure, title: str) -> None:
    """``title`` over the whole figure, wrapped to the figure's width: a long sweep name with
    a filter or a tuned param would otherwise run off both edges."""
    # Matplotlib's default 12-point suptitle: about 11 characters to the inch.
    width = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle(textwrap.fill(title, width=width, break_on_hyphens=False))


def short(label: str) -> str:
    """``label`` within :data:`LABEL` characters: a list of activations or widths per layer
    would squeeze the axes to nothing. A longer label's lists first write a run of equal
    items once with its count (``[256 × 16]``), so that nets of 8, 16 and 32 layers stay
    apart; what is still too long has its middle made ``…``."""
    if len(label) <= LABEL:
        return label
    label = LIST.sub(lambda found: f"[{_runs(found.group(1).split(', '))}]", label)
    if len(label) <= LABEL:
        return label
    half = (LABEL - 1) // 2
    return f"{label[:half]}…{label[-half:]}"


def _runs(items: list[str]) -> str:
    """``items`` with each run of more than two equal ones written once, with its count."""
    written = []
    for item, run in itertools.groupby(items):
        count = len(list(run))
        written += [f"{item} × {count}"] if count > 2 else [item] * count
    return ", ".join(written)


def _palette(count: int) -> tuple[list, list[str]]:
    """A colour and a line style per group. Past ten groups, tab20's paired shades; past
    twenty, the colours repeat with another line style, so that no two groups look alike
    in the legend."""
    palette = colormaps["tab10" if count <= 10 else "tab20"]
    colors = [palette(i % palette.N) for i in range(count)]
    return colors, [STYLES[i // palette.N % len(STYLES)] for i in range(count)]


def _seeds(axes, table: pd.DataFrame, values: dict[str, np.ndarray], colors: list) -> None:
    """Each group's seeds as points, spread a little up and down so that equal values stay
    visible, over its mean (a bar) and its 95% interval (a line); best on top."""
    labels = group_labels(table, group_columns(table))
    for y, (label, row, color) in enumerate(zip(labels, table.itertuples(), colors, strict=True)):
        if pd.isna(row.mean):
            # Left in the axes, whatever the metric's scale: there is no value to put it by.
            where = axes.get_yaxis_transform()
            axes.text(0.02, y, "no completed run", va="center", color="0.4", transform=where)
            continue
        if not pd.isna(row.ci_low):
            axes.plot([row.ci_low, row.ci_high], [y, y], color=color, lw=2.5, alpha=0.6)
        else:
            axes.text(row.mean, y - 0.3, f" {FEW}: no CI", va="center", color="0.3", fontsize=8)
        axes.plot([row.mean, row.mean], [y - 0.3, y + 0.3], color=color, lw=2.5)
        seeds = values.get(label, np.array([]))
        jitter = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else np.zeros(1)
        axes.scatter(
            seeds, y + jitter[: len(seeds)], s=14, color=color, edgecolor="0.15", linewidth=0.4
        )


def _ticks(table: pd.DataFrame) -> list[str]:
    """Each group's name, its completed and lost runs, and its verdict when it is the best
    or tied with it."""
    ticks = []
    for label, row in zip(
        group_labels(table, group_columns(table)), table.itertuples(), strict=True
    ):
        lost = ", ".join(f"{getattr(row, c)} {c}" for c in COUNTS if getattr(row, c))
        verdict = f", {row.verdict}" if row.verdict in (BEST, TIED) else ""
        ticks.append(f"{short(label)}\nn={row.n}" + (f", {lost}" if lost else "") + verdict)
    return ticks


def draw(
    table: pd.DataFrame,
    values: dict[str, np.ndarray],
    curve: pd.DataFrame,
    curve_name: str,
    title: str,
    path: Path,
) -> None:
    """Save the comparison figure at ``path``: on the left each group's seeds ``values``
    (by label) as points over its mean and 95% CI (none, and a note, below 3 runs), best on
    top, its completed and lost runs and its verdict under its name; on the right
    ``curve_name`` per epoch, the seeds' mean as a line and their range as a band, one
    colour per group."""
    labels = group_labels(table, group_columns(table))
    colors, styles = _palette(len(labels))
    fig = Figure(figsize=(13, max(4.5, 0.55 * len(labels) + 2)), layout="constrained")
    FigureCanvasAgg(fig)
    seeds, lines = fig.subplots(1, 2, width_ratios=[1, 1.25])
    _seeds_panel(seeds, table, values, colors)
    _curves_panel(lines, table, curve, curve_name, (colors, styles))
    headline(fig, title)
    fig.savefig(path, dpi=120, pil_kwargs=FAST_PNG)


def _seeds_panel(
    axes: Axes, table: pd.DataFrame, values: dict[str, np.ndarray], colors: list
) -> None:
    """Each group's seeds over its mean and interval, best on top."""
    metric = table.attrs["metric"]
    direction = "lower" if table.attrs["lower_is_better"] else "higher"
    count = len(table)
    _seeds(axes, table, values, colors)
    axes.set_yticks(np.arange(count), _ticks(table))
    # Best on top, and room for a group with no run at the bottom.
    axes.set_ylim(count - 0.5, -0.5)
    axes.set_xlabel(f"{metric}: each seed, the mean and its {LEVEL:.0%} CI; {direction} is better")
    axes.set_title(f"{metric}: each seed, mean, {LEVEL:.0%} CI")
    axes.grid(True, axis="x", alpha=0.3)


def _curves_panel(
    axes: Axes, table: pd.DataFrame, curve: pd.DataFrame, curve_name: str, palette: tuple
) -> None:
    """``curve_name`` per epoch: each group's mean over its seeds, and their range as a
    band, in the group's colour and style of ``palette``."""
    by = group_columns(table)
    labels = group_labels(table, by)
    # A metric logged once per run (test_*, train_seconds) has no curve to show.
    steps = curve.index.get_level_values("step").nunique()
    if steps < 2:
        note = f"{curve_name}: one value per run, no curve" if steps else f"no {curve_name} logged"
        axes.text(0.5, 0.5, note, ha="center", color="0.4", transform=axes.transAxes)
    else:
        drawn = set(curve.index.get_level_values("group"))
        for label, color, style in zip(labels, *palette, strict=True):
            if label in drawn:
                points = curve.loc[label]
                # MLflow's step is Keras's epoch index; the runner's figures count from 1.
                epochs = points.index + 1
                band = (points["low"], points["high"])
                axes.fill_between(epochs, *band, color=color, alpha=0.15, linewidth=0)
                axes.plot(
                    epochs, points["mean"], c=color, ls=style, marker="o", ms=3, label=short(label)
                )
        # Many groups would hide the curves: their legend goes beside the axes instead.
        outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if len(labels) > 6 else {}
        axes.legend(title=", ".join(by), fontsize="small", **outside)
    if curve_name.startswith("grad_norm/"):
        # Vanishing gradients span orders of magnitude: on a linear axis they all read 0.
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"{curve_name}: mean over completed runs, band: their range")
    axes.set_title(f"{curve_name} per epoch")
    axes.grid(True, alpha=0.3)


def pair_matrix(pairs: pd.DataFrame, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs as two square matrices over ``labels``: ``column − row`` (NaN for a group
    with itself and for groups never compared, such as two datasets'), and whether its
    Holm-adjusted p-value is below 5%."""
    where = {label: i for i, label in enumerate(labels)}
    diffs = np.full((len(labels), len(labels)), np.nan)
    significant = np.zeros_like(diffs, dtype=bool)
    for group, other, diff, p in pairs[["group", "other", "diff", "p_holm"]].to_numpy():
        i, j = where[" · ".join(map(str, group))], where[" · ".join(map(str, other))]
        diffs[i, j], diffs[j, i] = diff, -diff
        significant[i, j] = significant[j, i] = bool(p < ALPHA)
    return diffs, significant


def draw_pairs(pairs: pd.DataFrame, table: pd.DataFrame, title: str, path: Path) -> None:
    """Save every pair's difference as a matrix at ``path``: the cell in row A and column
    B is B − A, blue where B is ahead and red where it is behind (for the metric's own
    direction), framed where the Holm-adjusted p-value is below 5%; groups in the table's
    order, best first."""
    labels = group_labels(table, group_columns(table))
    diffs, significant = pair_matrix(pairs, labels)
    sign = -1 if table.attrs["lower_is_better"] else 1
    reach = (float(np.nanmax(np.abs(diffs))) if np.isfinite(diffs).any() else 0.0) or 1.0
    size = max(5.0, 0.45 * len(labels) + 3)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots()
    shown = axes.imshow(sign * diffs, cmap="RdBu", norm=TwoSlopeNorm(0, -reach, reach))
    for i, j in zip(*np.nonzero(significant), strict=True):
        axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="k", lw=1.5))
    if len(labels) <= ANNOTATED:
        for (i, j), value in np.ndenumerate(diffs):
            if not np.isnan(value):
                axes.text(j, i, minus(f"{value:+.3f}"), ha="center", va="center", fontsize=7)
    names = [short(label) for label in labels]
    axes.set_xticks(range(len(labels)), names, rotation=60, ha="right", fontsize="small")
    axes.set_yticks(range(len(labels)), names, fontsize="small")
    axes.set_xlabel("B (column)")
    axes.set_ylabel("A (row)")
    metric = table.attrs["metric"]
    bar = fig.colorbar(shown, ax=axes, shrink=0.8)
    bar.set_label(f"B − A in {metric}" + (", sign flipped: lower is better" if sign < 0 else ""))
    axes.set_title(f"{metric}: every pair, B − A; framed: Holm-adjusted p < {ALPHA:g}")
    headline(fig, title)
    fig.savefig(path, dpi=120, pil_kwargs=FAST_PNG)
