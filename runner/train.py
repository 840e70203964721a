"""Training: pick the device, compile, fit with validation data, evaluate on the test split.

Reads like a keras.io example. Per-epoch results leave through the ``on_epoch`` function
the caller passes in, so this module knows nothing of tracking.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from runner import stop
from runner.config import Encoding, OptimizerConfig, UserError
from runner.data import CLASSIFICATION

log = logging.getLogger(__name__)

# Rows per forward pass when evaluating: bounds memory on the large image sets.
CHUNK = 4096


@dataclass
class TrainResult:
    """Keras's per-epoch history, the test metrics (``test_`` + Keras's names), the time
    ``fit`` took, and the epoch whose loss stopped being finite, if one did."""

    history: dict[str, list[float]]
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    diverged_epoch: int | None = None


def configure_device(device: str, threads: int | None = None) -> str:
    """Make TensorFlow use the device asked for, with ``threads`` threads per op pool when
    given, before it creates any tensor; return the device used: ``gpu`` or ``cpu``.

    TensorFlow fixes these once per process, so the jobs of a sweep that share a process
    must ask for the same; asking again for the same is free."""
    request = (device, threads)
    if _configured:
        if request not in _configured:
            raise UserError(
                f"device={device} with {threads} threads cannot follow "
                f"device={next(iter(_configured))[0]} in the same process: TensorFlow fixes "
                "its devices once. Sweep them in separate runs."
            )
        return _configured[request]
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise UserError(
            "device=gpu, but TensorFlow sees no GPU on this machine (no CUDA-capable device "
            "or driver). Use device=auto to train on the GPU when there is one, or device=cpu."
        )
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if device == "cpu" or not gpus:
        tf.config.set_visible_devices([], "GPU")
        used = "cpu"
    else:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        used = "gpu"
    _configured[request] = used
    return used


_configured: dict[tuple[str, int | None], str] = {}


def batch_orders(samples: int, seed: int, epochs: int) -> np.ndarray:
    """``[epochs, samples]``: the order in which the training samples are fed, a fresh
    permutation each epoch, drawn from ``seed``. Single and fused training (runner/stack.py)
    both draw it here, so a model sees the same batches either way."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(samples) for _ in range(epochs)]).astype(np.int32)


def _per_execution(steps: int, asked: int) -> int:
    """The largest divisor of an epoch's ``steps`` up to ``asked``: Keras runs whole
    executions, and one that did not end with the epoch would carry batches into the next."""
    return max(d for d in range(1, min(steps, asked) + 1) if steps % d == 0)


def make_optimizer(cfg: OptimizerConfig) -> keras.optimizers.Optimizer:
    config = {"learning_rate": cfg.learning_rate}
    if cfg.momentum is not None:
        config["momentum"] = cfg.momentum
    return keras.optimizers.get({"class_name": cfg.name, "config": config})


def loss_scaled(
    optimizer: keras.optimizers.Optimizer, model: keras.Model
) -> keras.optimizers.Optimizer:
    """``optimizer`` with Keras's dynamic loss scaling when ``model`` has layers that compute
    in float16 (``train.mixed_precision``), whose small gradients would otherwise underflow
    to zero. Keras adds it by itself only for a model whose own policy is mixed, and
    :func:`runner.model.build_model` sets the policy per layer."""
    if any(layer.compute_dtype == "float16" for layer in model.layers):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def metric_names(task: str) -> list[str]:
    """The metrics a job of ``task`` logs besides its loss, as :func:`task_metrics` names
    them."""
    return ["accuracy"] if task == CLASSIFICATION else ["mae", "rmse"]


def validation_metrics(task: str) -> list[str]:
    """The validation metrics a job of ``task`` logs each epoch."""
    return [f"val_{name}" for name in ["loss", *metric_names(task)]]


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


def evaluate(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    loss: str,
    metrics: list[keras.metrics.Metric],
) -> dict[str, float]:
    """The loss (mean over samples, as ``model.evaluate`` reports it) and the metrics of
    ``model`` on (x, y), from one forward pass in chunks of :data:`CHUNK` rows."""
    predictions = keras.ops.concatenate(
        [model(x[start : start + CHUNK], training=False) for start in range(0, len(x), CHUNK)]
    )
    result = {"loss": float(keras.ops.mean(keras.losses.get(loss)(y, predictions)))}
    for metric in metrics:
        metric.reset_state()
        metric.update_state(y, predictions)
        result[metric.name] = float(metric.result())
    return result


class _EpochEnd(keras.callbacks.Callback):
    """Adds the validation metrics to the epoch's logs, logs the epoch, and hands the logs
    to ``on_epoch``; after each batch, raises a Ctrl-C or SIGTERM whose first raise a
    finalizer swallowed (see runner/stop.py).

    Validation runs here rather than through ``fit(validation_data=...)``, whose
    ``evaluate`` builds a new input pipeline every epoch: on digits that took as long as
    the training steps themselves."""

    def __init__(
        self,
        epochs: int,
        validation: Callable[[], dict[str, float]],
        on_epoch: Callable[[int, dict[str, float]], None] | None,
    ):
        super().__init__()
        self.epochs = epochs
        self.validation = validation
        self.on_epoch = on_epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        stop.check()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stop.check()
        logs = logs if logs is not None else {}
        logs.update({f"val_{name}": value for name, value in self.validation().items()})
        values = {name: float(value) for name, value in logs.items()}
        # Per-layer diagnostics (``grad_norm/hidden_0``, ...) go to tracking, not the console.
        log.info(
            "epoch %d/%d  %s",
            epoch + 1,
            self.epochs,
            "  ".join(f"{name}={value:.4g}" for name, value in values.items() if "/" not in name),
        )
        if self.on_epoch is not None:
            self.on_epoch(epoch, values)


# How a traced tf.custom_gradient names the gradient function it registers.
CUSTOM_GRADIENT = "CustomGradient-"


@contextmanager
def custom_gradients_released() -> Iterator[None]:
    """On the way out, unregister the gradient functions that ``tf.custom_gradient``
    registered while the body traced.

    Keras's optimizer sums the gradients through ``tf.custom_gradient`` (an all-reduce,
    a no-op on one device), which in a traced function registers a gradient function in
    TensorFlow's process-wide registry and never removes it (tensorflow/tensorflow#27492,
    #97697). Its closure holds the traced training step, graph and all: about 4 MB per
    trained model, and a process running 100 jobs grew by 380 MB. Only a gradient taken
    through that step would use it, and none is once training is over."""
    registry = tf_ops.gradient_registry
    before = set(registry.list())
    try:
        yield
    finally:
        for name in set(registry.list()) - before:
            if name.startswith(CUSTOM_GRADIENT):
                # The registry has no method to unregister.
                del registry._registry[name]


@custom_gradients_released()
def train(
    model: keras.Model,
    loss: str,
    optimizer: OptimizerConfig,
    task: str,
    encoding: Encoding,
    data: tuple[np.ndarray, ...],
    epochs: int,
    batch_size: int,
    seed: int,
    steps_per_execution: int = 1,
    callbacks: list[keras.callbacks.Callback] = (),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Compile, fit on (x_train, y_train), validating on (x_val, y_val) after each epoch,
    and evaluate on (x_test, y_test) unless the loss became NaN or infinite, which stops
    training. ``seed`` fixes the order of the training batches. ``callbacks`` may add
    values to each epoch's logs, which ``on_epoch`` then receives with Keras's own."""
    x_train, y_train, x_val, y_val, x_test, y_test = data
    steps = math.ceil(len(x_train) / batch_size)
    model.compile(
        loss=loss,
        optimizer=loss_scaled(make_optimizer(optimizer), model),
        metrics=task_metrics(task, encoding),
        steps_per_execution=_per_execution(steps, steps_per_execution),
        # XLA compiles each model anew, which costs more than it saves on these small MLPs.
        jit_compile=False,
    )
    # Keras otherwise builds the optimizer's slots in the first step, while tracing it, where
    # each variable took about 40 ms to create: built here, before fit, a 2-epoch job of
    # the default model ([64, 64], Adam) trained in 0.8-1.2 s instead of 1.6-2.5 s.
    model.optimizer.build(model.trainable_variables)
    x, y = tf.constant(x_train), tf.constant(y_train)
    batches = (
        tf.data.Dataset.from_tensor_slices(batch_orders(len(x_train), seed, epochs))
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda rows: (tf.gather(x, rows), tf.gather(y, rows)))
        .prefetch(tf.data.AUTOTUNE)
    )
    val_metrics = task_metrics(task, encoding)
    start = time.perf_counter()
    fit = model.fit(
        batches,
        epochs=epochs,
        # One pass over the pipeline for all epochs: it holds exactly this many batches each.
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,  # the pipeline shuffles, from ``seed``
        callbacks=[
            keras.callbacks.TerminateOnNaN(),
            *callbacks,
            _EpochEnd(epochs, lambda: evaluate(model, x_val, y_val, loss, val_metrics), on_epoch),
        ],
    )
    result = TrainResult(history=fit.history, train_seconds=time.perf_counter() - start)
    for epoch, value in enumerate(fit.history["loss"]):
        if not math.isfinite(value):
            result.diverged_epoch = epoch
            return result
    test = evaluate(model, x_test, y_test, loss, val_metrics)
    result.test = {f"test_{name}": value for name, value in test.items()}
    return result
