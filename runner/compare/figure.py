"""The comparison's figure: each group's mean with its interval, and its curve per epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from runner.compare.table import COUNTS, group_columns, group_labels
from runner.stats import BEST, FEW, LEVEL, TIED

STYLES = ("-", "--", ":", "-.")


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
