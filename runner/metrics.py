"""The names of what a job logs, which of them are better lower, and which activations each
diagnostic watches: shared by both training engines, the objective check and the comparison.

- per epoch: ``loss`` and the task's metrics (``accuracy``; or ``mae`` and ``rmse``), the
  same with ``val_``, and the diagnostics ``grad_norm/hidden_i``,
  ``median_activation/hidden_i``, ``dead_fraction/hidden_i`` (relu family) and
  ``saturated_fraction/hidden_i`` (sigmoid, tanh), one per hidden layer: a CNN's conv
  blocks first (hidden_0...), then its Dense layers;
- at the end: the same with ``test_``, and ``train_seconds``.
"""

from __future__ import annotations

from runner.config import Task

# Activations whose units can die (output <= 0 for every input): relu, and its kin whose
# negative side is small, flat, or learned.
RELU_FAMILY = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish", "mish", "prelu"}
)
# Activations that saturate, each with where a unit's output sits in one of its flat tails,
# as a mask. Plain operators, so that each engine applies it to its backend's tensors.
SATURATED = {
    "sigmoid": lambda out: (out < 0.01) | (out > 0.99),
    "tanh": lambda out: abs(out) > 0.99,
}

LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse")


def metric_names(task: Task) -> list[str]:
    """The metrics a job of ``task`` logs besides its loss."""
    return ["accuracy"] if task is Task.classification else ["mae", "rmse"]


def validation_metrics(task: Task) -> list[str]:
    """The validation metrics a job of ``task`` logs each epoch."""
    return [f"val_{name}" for name in ["loss", *metric_names(task)]]


def diagnostic_names(layer: int, activation: str) -> list[str]:
    """The diagnostics logged for hidden layer ``layer`` with ``activation``."""
    names = [f"grad_norm/hidden_{layer}", f"median_activation/hidden_{layer}"]
    if activation in RELU_FAMILY:
        names.append(f"dead_fraction/hidden_{layer}")
    elif activation in SATURATED:
        names.append(f"saturated_fraction/hidden_{layer}")
    return names


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is the better one. Losses and errors are: ``loss``,
    ``mae``, ``rmse``, ``mse`` with or without ``test_``/``val_``, and any name ending in
    ``loss`` or ``error``; so are times (``train_seconds``), and the shares of dead or
    saturated units (``dead_fraction/hidden_0``), which learn little or nothing. Everything
    else counts as higher-is-better: accuracies, and the diagnostics that have no better
    direction (``grad_norm/hidden_0``, ``median_activation/hidden_0``), which
    ``--lower-is-better`` turns. A diagnostic is judged by its family, the part before
    ``/``."""
    family = metric.split("/", 1)[0].removeprefix("test_").removeprefix("val_")
    return family in LOWER_IS_BETTER or family.endswith(("loss", "error", "seconds", "fraction"))


def bounds(metric: str) -> tuple[float, float] | None:
    """The range every value of ``metric`` lies in, when it has one: [0, 1] for accuracies
    and for the diagnostics' fractions (``dead_fraction/hidden_0``); None for the others."""
    family = metric.split("/", 1)[0]
    return (0.0, 1.0) if family.endswith(("accuracy", "fraction")) else None
