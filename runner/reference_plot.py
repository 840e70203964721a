"""Draw every activation of :mod:`runner.reference` with its derivative into one PNG.

Run as ``python -m runner.reference_plot [OUT.png]``; it prints the path it wrote.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runner import reference as ref

Curve = Callable[[np.ndarray], np.ndarray]


def _softmax_first(x: np.ndarray) -> np.ndarray:
    """The first component of ``softmax([x, 0])`` for each ``x``: a softmax over two scores
    with the second pinned to 0, which is the sigmoid in disguise."""
    return ref.softmax(np.stack([x, np.zeros_like(x)], axis=-1))[:, 0]


def _softmax_first_grad(x: np.ndarray) -> np.ndarray:
    """The derivative of :func:`_softmax_first`, read off the Jacobian's ``[0, 0]`` entry so that
    the figure shows :func:`runner.reference.softmax_jacobian` itself."""
    return np.array([ref.softmax_jacobian([xi, 0.0])[0, 0] for xi in x])


PANELS: list[tuple[str, Curve, Curve]] = [
    ("sigmoid", ref.sigmoid, ref.sigmoid_grad),
    ("tanh", ref.tanh, ref.tanh_grad),
    ("relu", ref.relu, ref.relu_grad),
    ("linear", ref.linear, ref.linear_grad),
    ("softmax([x, 0])[0]", _softmax_first, _softmax_first_grad),
]


def main(path: str | Path = "activations.png") -> Path:
    """Plot each activation (blue) and its derivative (orange, dashed) over ``[-6, 6]``, one
    panel per activation, save the figure as a PNG at ``path``, print the path and return it.
    The figure is drawn on an Agg canvas of its own rather than through ``pyplot``, so it needs
    no display and leaves matplotlib's global state alone."""
    path = Path(path)
    x = np.linspace(-6, 6, 1201)
    fig = Figure(figsize=(4 * len(PANELS), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (name, f, grad) in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        ax.axhline(0, color="0.8", linewidth=0.8)
        ax.axvline(0, color="0.8", linewidth=0.8)
        ax.plot(x, f(x), color="tab:blue", linewidth=2, label="f(x)")
        ax.plot(x, grad(x), color="tab:orange", linewidth=2, linestyle="--", label="f'(x)")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle("Activations (solid) and their derivatives (dashed)")
    fig.savefig(path, dpi=120)
    print(path)
    return path


if __name__ == "__main__":
    main(*sys.argv[1:2])
