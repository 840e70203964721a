"""What both engines build with Keras: a member's optimizer and its learning-rate schedule,
and whether its model computes in float16."""

from __future__ import annotations

import keras

from runner.engine import OptimizerKind, Schedule


def schedule(
    kind: Schedule, learning_rate, steps: int
) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """Keras's schedule for ``kind`` from ``learning_rate``, with ``steps`` optimizer steps
    an epoch; None for a constant rate. ``step`` is ExponentialDecay's staircase;
    ``warmup_cosine``, CosineDecay's warmup from 0."""
    schedules = keras.optimizers.schedules
    decay_steps = kind.decay_epochs * steps
    if kind.name in ("cosine", "warmup_cosine"):
        warmup = kind.name == "warmup_cosine"
        return schedules.CosineDecay(
            0.0 if warmup else learning_rate,
            decay_steps,
            alpha=kind.alpha,
            warmup_target=learning_rate if warmup else None,
            warmup_steps=kind.warmup_epochs * steps if warmup else 0,
        )
    if kind.name in ("step", "exponential"):
        return schedules.ExponentialDecay(
            learning_rate, decay_steps, kind.decay_rate, staircase=kind.name == "step"
        )
    return None


def make_optimizer(
    kind: OptimizerKind, learning_rate: float, steps: int | None = None
) -> keras.optimizers.Optimizer:
    """The Keras optimizer ``kind`` names, at ``learning_rate``; with ``steps`` (an epoch's
    optimizer steps), its rate follows ``kind``'s schedule."""
    rate = steps and schedule(kind.schedule, learning_rate, steps)
    config: dict = {"learning_rate": rate or learning_rate}
    for key in ("momentum", "clipnorm", "clipvalue", "weight_decay"):
        if getattr(kind, key) is not None:
            config[key] = getattr(kind, key)
    if kind.nesterov:
        config["nesterov"] = True
    return keras.optimizers.get({"class_name": kind.name, "config": config})


def mixed(net: keras.Model) -> bool:
    """Whether ``net`` has layers that compute in float16 (``train.mixed_precision``)."""
    return any(layer.compute_dtype == "float16" for layer in net.layers)
