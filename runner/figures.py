"""The per-run figure, from a run's Keras history: learning curves and gradient norms.

One figure with a panel each, drawn on matplotlib's Agg canvas through the object API, so
that it needs no display, leaves pyplot's global state alone in a sweep's long-lived
process, and is rendered once per run (rendering, not drawing, is what costs).
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullLocator


def training_curves(history: dict[str, list[float]], metric: str, title: str) -> Figure:
    """Loss and ``metric`` (``accuracy`` or ``mae``) per epoch, training and validation,
    and, when the diagnostics ran, each hidden layer's gradient norm on a log scale."""
    layers = sorted(k for k in history if k.startswith("grad_norm/"))
    panels = 3 if layers else 2
    # A fixed layout: matplotlib's automatic ones doubled the time a figure took to render.
    figure = Figure(figsize=(4.5 * panels, 3.6))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels)
    for ax, name in zip(axes, ("loss", metric), strict=False):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=label)
        ax.set_ylabel(name)
        ax.legend()
    if layers:
        ax = axes[2]
        for key in layers:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key.split("/", 1)[1])
        ax.set_yscale("log")
        # Plain labels and no minor ticks: the default ones parse mathtext for every label
        # and create a tick artist per minor tick, most of the time a figure took to render.
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylabel("gradient norm on the probe batch")
        ax.legend(title="layer")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        # Major lines only: a log axis's minor grid added a third to the time to render.
        ax.grid(True, alpha=0.3)
    figure.suptitle(title, fontsize="medium")
    return figure
