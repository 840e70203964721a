"""What both engines build with Keras: a member's optimizer, and whether its model computes
in float16."""

from __future__ import annotations

import keras

from runner.engine import OptimizerKind


def make_optimizer(kind: OptimizerKind, learning_rate: float) -> keras.optimizers.Optimizer:
    """The Keras optimizer ``kind`` names, at ``learning_rate``."""
    config: dict[str, float] = {"learning_rate": learning_rate}
    if kind.momentum is not None:
        config["momentum"] = kind.momentum
    return keras.optimizers.get({"class_name": kind.name, "config": config})


def mixed(net: keras.Model) -> bool:
    """Whether ``net`` has layers that compute in float16 (``train.mixed_precision``)."""
    return any(layer.compute_dtype == "float16" for layer in net.layers)
