"""The per-run figure: a sweep's process draws each run's figure over the last one of the
same layout, and what it renders must not depend on the runs drawn before it."""

from __future__ import annotations

import io

import numpy as np

from runner import figures
from runner.compare.figure import short


def _history(rng: np.random.Generator, epochs: int, scale: float) -> dict[str, list[float]]:
    keys = ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0")
    return {key: list(rng.random(epochs) * scale) for key in keys}


def _epochs(history: dict[str, list[float]]) -> list[int]:
    return list(range(len(history["loss"])))


def _png(history: dict[str, list[float]], title: str, built: dict) -> bytes:
    buffer = io.BytesIO()
    figures.training_curves(history, _epochs(history), "accuracy", title, built).savefig(
        buffer, format="png"
    )
    return buffer.getvalue()


def _shows(figure, history: dict[str, list[float]]) -> None:
    """Each panel's axes span its curves' epochs and values."""
    panels = (("loss", "val_loss"), ("accuracy", "val_accuracy"), ("grad_norm/hidden_0",))
    for ax, keys in zip(figure.axes, panels, strict=True):
        values = [v for key in keys for v in history[key]]
        low, high = ax.get_ylim()
        assert low <= min(values) and max(values) <= high, (keys, ax.get_ylim())
        left, right = ax.get_xlim()
        assert left <= 1 and len(history[keys[0]]) <= right, (keys, ax.get_xlim())


def test_a_figure_drawn_over_another_run_renders_as_if_drawn_first():
    rng = np.random.default_rng(0)
    first, second = _history(rng, 30, 1.0), _history(rng, 12, 100.0)
    built: dict = {}
    before = _png(first, "first", built)
    # The second run's fewer epochs and larger values rescale the axes; its title replaces
    # the first's.
    over = _png(second, "second", built)
    _shows(figures.training_curves(second, _epochs(second), "accuracy", "second", built), second)
    assert (
        figures.training_curves(second, _epochs(second), "accuracy", "second", built).get_suptitle()
        == "second"
    )
    assert len(built) == 1
    assert _png(second, "second", {}) == over
    assert over != before


def test_each_layout_has_its_own_figure():
    built: dict = {}
    rng = np.random.default_rng(1)
    with_diagnostics = _history(rng, 5, 1.0)
    without = {k: v for k, v in with_diagnostics.items() if not k.startswith("grad_norm/")}
    assert (
        len(
            figures.training_curves(
                with_diagnostics, _epochs(with_diagnostics), "accuracy", "a", built
            ).axes
        )
        == 3
    )
    assert len(figures.training_curves(without, _epochs(without), "accuracy", "b", built).axes) == 2
    assert (
        len(
            figures.training_curves(
                with_diagnostics, _epochs(with_diagnostics), "accuracy", "c", built
            ).axes
        )
        == 3
    )
    assert len(built) == 2


def test_long_labels_keep_nets_of_different_depths_apart():
    labels = [short(f"selu · {[256] * depth}") for depth in (8, 16, 32)]
    assert labels == ["selu · [256 × 8]", "selu · [256 × 16]", "selu · [256 × 32]"]
    # Runs of two stay as they are; a label still too long has its middle cut.
    assert short(str(["relu", "relu", "tanh"] + [f"act{i}" for i in range(8)])).count("…") == 1
    assert short("[64, 64, 32, 32, 32, 32, 16, 16, 16, 8, 8, 8, 8]") == (
        "[64, 64, 32 × 4, 16 × 3, 8 × 4]"
    )
    assert short("relu · mse") == "relu · mse"
