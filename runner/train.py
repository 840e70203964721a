"""Training: pick the device, compile, fit with validation data, evaluate on the test split.

Reads like a keras.io example. Per-epoch results leave through the ``on_epoch`` function
the caller passes in, so this module knows nothing of tracking.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from runner.config import Encoding, OptimizerConfig, UserError
from runner.data import CLASSIFICATION

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Keras's per-epoch history, the test metrics (``test_`` + Keras's names), the time
    ``fit`` took, and the epoch whose loss stopped being finite, if one did."""

    history: dict[str, list[float]]
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    diverged_epoch: int | None = None


def configure_device(device: str) -> str:
    """Make TensorFlow use the device asked for, before it creates any tensor; return the
    device used: ``gpu`` or ``cpu``."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise UserError(
            "device=gpu, but TensorFlow sees no GPU on this machine (no CUDA-capable device "
            "or driver). Use device=auto to train on the GPU when there is one, or device=cpu."
        )
    if device == "cpu" or not gpus:
        tf.config.set_visible_devices([], "GPU")
        return "cpu"
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return "gpu"


def make_optimizer(cfg: OptimizerConfig) -> keras.optimizers.Optimizer:
    config = {"learning_rate": cfg.learning_rate}
    if cfg.momentum is not None:
        config["momentum"] = cfg.momentum
    return keras.optimizers.get({"class_name": cfg.name, "config": config})


def task_metrics(task: str, encoding: Encoding) -> list[keras.metrics.Metric]:
    """``accuracy`` of the kind that matches the target encoding, or ``mae`` and ``rmse``."""
    if task == CLASSIFICATION:
        accuracy = {
            Encoding.onehot: keras.metrics.CategoricalAccuracy,
            Encoding.integer: keras.metrics.SparseCategoricalAccuracy,
            Encoding.binary: keras.metrics.BinaryAccuracy,
        }[encoding]
        return [accuracy(name="accuracy")]
    return [
        keras.metrics.MeanAbsoluteError(name="mae"),
        keras.metrics.RootMeanSquaredError(name="rmse"),
    ]


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, epochs: int, on_epoch: Callable[[int, dict[str, float]], None] | None):
        super().__init__()
        self.epochs = epochs
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {name: float(value) for name, value in (logs or {}).items()}
        log.info(
            "epoch %d/%d  %s",
            epoch + 1,
            self.epochs,
            "  ".join(f"{name}={value:.4g}" for name, value in logs.items()),
        )
        if self.on_epoch is not None:
            self.on_epoch(epoch, logs)


def train(
    model: keras.Model,
    loss: str,
    optimizer: OptimizerConfig,
    metrics: list[keras.metrics.Metric],
    data: tuple[np.ndarray, ...],
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Compile, fit on (x_train, y_train) with (x_val, y_val) for validation, and evaluate on
    (x_test, y_test) unless the loss became NaN or infinite, which stops training."""
    x_train, y_train, x_val, y_val, x_test, y_test = data
    model.compile(loss=loss, optimizer=make_optimizer(optimizer), metrics=metrics)
    start = time.perf_counter()
    fit = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN(), _EpochEnd(epochs, on_epoch)],
    )
    result = TrainResult(history=fit.history, train_seconds=time.perf_counter() - start)
    for epoch, value in enumerate(fit.history["loss"]):
        if not math.isfinite(value):
            result.diverged_epoch = epoch
            return result
    test = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0, return_dict=True)
    result.test = {f"test_{name}": float(value) for name, value in test.items()}
    return result
