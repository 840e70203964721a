"""Per-run figures, from a run's Keras history: learning curves and gradient norms.

Drawn on matplotlib's Agg canvas through the object API, so they need no display and leave
pyplot's global state alone in a sweep's long-lived process.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _epochs(values: list[float]) -> list[int]:
    return list(range(1, len(values) + 1))


def learning_curves(history: dict[str, list[float]], metric: str, title: str) -> Figure:
    """Loss and ``metric`` (``accuracy`` or ``mae``) per epoch, training and validation."""
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, name in zip(figure.subplots(1, 2), ("loss", metric), strict=True):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key in history:
                ax.plot(_epochs(history[key]), history[key], style, marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    figure.suptitle(title, fontsize="medium")
    return figure


def gradient_norms(history: dict[str, list[float]], title: str) -> Figure | None:
    """Each hidden layer's gradient norm per epoch on a log scale; None without
    diagnostics."""
    layers = sorted(k for k in history if k.startswith("grad_norm/"))
    if not layers:
        return None
    figure = Figure(figsize=(6, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for key in layers:
        ax.plot(_epochs(history[key]), history[key], marker=".", label=key.split("/", 1)[1])
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("||dL/dW|| on the probe batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="layer")
    figure.suptitle(title, fontsize="small")
    return figure
