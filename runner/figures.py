"""The per-run figure, from a run's Keras history: learning curves and gradient norms.

One figure with a panel each, drawn on matplotlib's Agg canvas through the object API, so
that it needs no display, leaves pyplot's global state alone in a sweep's long-lived
process, and is rendered once per run. The figure of a layout (its panels and curves) is
built once, kept by the caller, and drawn again with each run's values: building its axes,
ticks, lines and legends took as long as rendering it (bench/README.md, "Tracking
overhead").
"""

from __future__ import annotations

import warnings

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullLocator

# A panel: its y label and its curves, each a history key, its label and its line style.
Panel = tuple[str, tuple[tuple[str, str, str], ...]]


def training_curves(
    history: dict[str, list[float]], epochs: list[int], metric: str, title: str, built: dict
) -> Figure:
    """Loss and ``metric`` (``accuracy`` or ``mae``) per epoch, training and validation,
    and, when the diagnostics ran, each hidden layer's gradient norm on a log scale: each
    curve's values at ``epochs`` (counted from 0, drawn from 1).

    The figure is the one kept in ``built`` for its layout, built there the first time: the
    next call with the same keys in ``history`` draws over it, so save it before."""
    panels: list[Panel] = [
        (
            name,
            tuple(
                (key, label, style)
                for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--"))
                if key in history
            ),
        )
        for name in ("loss", metric)
    ]
    layers = sorted(k for k in history if k.startswith("grad_norm/"))
    if layers:
        curves = tuple((key, key.split("/", 1)[1], "-") for key in layers)
        panels.append(("gradient norm on the probe batch", curves))
    layout = tuple(panels)
    if layout not in built:
        built[layout] = _build(layout)
    figure = built[layout]
    for ax, (_, curves) in zip(figure.axes, layout, strict=True):
        for line, (key, _, _) in zip(ax.get_lines(), curves, strict=True):
            line.set_data([epoch + 1 for epoch in epochs], history[key])
        ax.relim()
        with warnings.catch_warnings():
            # A diverged run's gradient norms may have no finite value for the log axis to
            # fit: its panel is left empty, which is what there is to show.
            warnings.filterwarnings("ignore", "Data has no positive values")
            ax.autoscale_view()
    figure.suptitle(title, fontsize="medium")
    return figure


def _build(layout: tuple[Panel, ...]) -> Figure:
    # A fixed layout: matplotlib's automatic ones doubled the time a figure took to render.
    figure = Figure(figsize=(4.5 * len(layout), 3.6))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(layout))
    for ax, (ylabel, curves) in zip(axes, layout, strict=True):
        for _, label, style in curves:
            ax.plot([], [], style, label=label)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        # Major lines only: a log axis's minor grid added a third to the time to render.
        ax.grid(True, alpha=0.3)
    for ax in axes[:2]:
        ax.legend()
    if len(layout) == 3:
        ax = axes[2]
        ax.set_yscale("log")
        # Plain labels and no minor ticks: the default ones parse mathtext for every label
        # and create a tick artist per minor tick, most of the time a figure took to render.
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.legend(title="layer")
    return figure
