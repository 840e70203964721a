"""Training on TensorFlow: Keras's ``compile`` and ``fit``, one model at a time.

Reads like a keras.io example: compile, fit on a ``tf.data`` pipeline of the batch orders
every engine shares, validate after each epoch, evaluate on the test split. The
diagnostics are a callback that takes TensorFlow's own gradients. Fused sweeps are JAX's
alone (runner/engine/jax_engine.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice

import keras
import numpy as np
import tensorflow as tf

from runner import stop
from runner.compat.tensorflow import gradient_registry
from runner.config import Encoding, Task, UserError
from runner.data import Dataset, encode_targets
from runner.engine import CHUNK, Member, OnEpoch, Settings, TrainResult, batch_orders, epoch_line
from runner.engine.common import make_optimizer, mixed
from runner.metrics import RELU_FAMILY, SATURATED, lower_is_better
from runner.model import ModelSpec, hidden_layers

log = logging.getLogger("runner.engine")


def _per_execution(steps: int, asked: int) -> int:
    """The largest divisor of an epoch's ``steps`` up to ``asked``: Keras runs whole
    executions, and one that did not end with the epoch would carry batches into the next."""
    return max(d for d in range(1, min(steps, asked) + 1) if steps % d == 0)


def task_metrics(task: Task, encoding: Encoding) -> list[keras.metrics.Metric]:
    """``accuracy`` of the kind that matches the target encoding, or ``mae`` and ``rmse``."""
    if task is Task.classification:
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
    model: keras.Model, x: np.ndarray, y: np.ndarray, loss: str, metrics: list
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


class Diagnostics(keras.callbacks.Callback):
    """Adds the diagnostics of every hidden layer (runner/metrics.py) to the epoch's logs,
    measured on a fixed probe batch with TensorFlow's gradients."""

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, loss: str, spec: ModelSpec):
        super().__init__()
        self.x = tf.constant(x_probe)
        self.y = tf.constant(y_probe)
        self.loss = keras.losses.get(loss)
        self.spec = spec
        self.probe = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        hidden = hidden_layers(self.model, self.spec)
        outputs = [output.output for _, output in hidden] + [self.model.output]
        tap = keras.Model(self.model.inputs, outputs)
        kernels = [kernel.kernel for kernel, _ in hidden]
        optimizer = self.model.optimizer

        # One traced function: a forward and backward pass per epoch, without eager overhead.
        @tf.function
        def probe(x: tf.Tensor, y: tf.Tensor) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
            # The loss scale training uses under train.mixed_precision, 1 otherwise: without
            # it, a deep sigmoid stack's first-layer gradient underflows to 0 in float16.
            scale = optimizer.scale_loss(tf.constant(1.0))
            with tf.GradientTape() as tape:
                *hidden_outputs, predictions = tap(x, training=False)
                loss = tf.reduce_mean(self.loss(y, predictions)) * scale
            gradients = tape.gradient(loss, kernels)
            return [gradient / scale for gradient in gradients], hidden_outputs

        self.probe = probe

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        gradients, outputs = self.probe(self.x, self.y)
        for i, (gradient, output, activation) in enumerate(
            zip(gradients, outputs, self.spec.activations, strict=True)
        ):
            logs[f"grad_norm/hidden_{i}"] = float(tf.norm(tf.cast(gradient, tf.float32)))
            # All but the last axis: a unit's (a conv block's channel's) samples and positions.
            per_unit = list(range(len(output.shape) - 1))
            # Each unit's mean output on the probe, then their median.
            unit_means = tf.reduce_mean(tf.cast(output, tf.float32), axis=per_unit)
            logs[f"median_activation/hidden_{i}"] = float(np.median(unit_means.numpy()))
            if activation in RELU_FAMILY:
                # A unit that is <= 0 for every sample, anywhere.
                dead = tf.reduce_all(output <= 0, axis=per_unit)
                logs[f"dead_fraction/hidden_{i}"] = float(tf.reduce_mean(tf.cast(dead, tf.float32)))
            elif activation in SATURATED:
                saturated = SATURATED[activation](output)
                logs[f"saturated_fraction/hidden_{i}"] = float(
                    tf.reduce_mean(tf.cast(saturated, tf.float32))
                )


class _EpochEnd(keras.callbacks.Callback):
    """Adds the validation metrics to the epoch's logs, logs the epoch, keeps it in the
    ``result`` (the first epoch whose loss is not finite as the one it diverged at), and
    hands the logs to ``on_epoch``; after each batch, raises a Ctrl-C or SIGTERM whose
    first raise a TensorFlow finalizer swallowed (runner/stop.py).

    Validation runs here rather than through ``fit(validation_data=...)``, whose
    ``evaluate`` builds a new input pipeline every epoch."""

    def __init__(
        self,
        epochs: int,
        validation: Callable[[], dict[str, float]],
        result: TrainResult,
        on_epoch: Callable[[int, dict[str, float]], None] | None,
    ):
        super().__init__()
        self.epochs = epochs
        self.validation = validation
        self.result = result
        self.on_epoch = on_epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        stop.raise_if_signalled()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stop.raise_if_signalled()
        logs = logs if logs is not None else {}
        logs.update({f"val_{name}": value for name, value in self.validation().items()})
        # The rate the next step takes, where the schedule has brought it.
        logs["learning_rate"] = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        values = {name: float(value) for name, value in logs.items()}
        log.info("%s", epoch_line(epoch, self.epochs, values))
        self.result.add(epoch, values)
        if not math.isfinite(values["loss"]) and self.result.diverged_epoch is None:
            self.result.diverged_epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch, values)


class _Unkept(keras.callbacks.History):
    """In the place of the History that Keras's ``fit`` keeps every epoch's logs in: the
    run's result keeps them, bounded (:class:`TrainResult`), so memory stays flat."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass


# How a traced tf.custom_gradient names the gradient function it registers.
CUSTOM_GRADIENT = "CustomGradient-"


@contextmanager
def custom_gradients_released() -> Iterator[None]:
    """On the way out, unregister the gradient functions that ``tf.custom_gradient``
    registered while the body traced.

    Keras's optimizer sums the gradients through ``tf.custom_gradient`` (an all-reduce,
    a no-op on one device), which in a traced function registers a gradient function in
    TensorFlow's process-wide registry and never removes it (tensorflow/tensorflow#27492,
    #97697). Its closure holds the traced training step, graph and all, so a process
    running a sweep grew with every job (tests/test_reliability.py). Only a gradient taken
    through that step would use it, and none is once training is over."""
    registry = gradient_registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in set(registry) - before:
                if name.startswith(CUSTOM_GRADIENT):
                    del registry[name]


def fit_each(
    members: list[Member], dataset: Dataset, settings: Settings, on_epoch: OnEpoch | None = None
) -> list[TrainResult]:
    """Fit each member on its own with Keras's ``fit``."""
    if len(members) != 1:
        raise UserError(
            "backend=tensorflow trains one model at a time; fused sweeps "
            "(hydra/launcher=fused) train on backend=jax."
        )
    member = members[0]
    with custom_gradients_released():
        return [_fit(member, dataset, settings, on_epoch and (lambda e, v: on_epoch(0, e, v)))]


def _early_stopping(member: Member) -> keras.callbacks.EarlyStopping | None:
    """Keras's EarlyStopping for the member's rule, its direction that of its metric."""
    rule = member.early_stopping
    if rule is None:
        return None
    return keras.callbacks.EarlyStopping(
        monitor=rule.monitor,
        patience=rule.patience,
        min_delta=rule.min_delta,
        mode="min" if lower_is_better(rule.monitor) else "max",
        restore_best_weights=rule.restore_best,
    )


def _pipeline(
    x: np.ndarray, y: np.ndarray, seed: int, epochs: int, batch_size: int
) -> tf.data.Dataset:
    """The training batches of every epoch, in the order the member's seed draws (the
    orders every engine shares)."""
    x, y = tf.constant(x), tf.constant(y)
    orders = batch_orders(len(x), seed)
    return (
        tf.data.Dataset.from_generator(
            lambda: islice(orders, epochs), output_signature=tf.TensorSpec([None], tf.int32)
        )
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        .map(lambda rows: (tf.gather(x, rows), tf.gather(y, rows)))
        .prefetch(tf.data.AUTOTUNE)
    )


def _fit(
    member: Member,
    dataset: Dataset,
    settings: Settings,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    """Compile, fit on the training split, validating after each epoch, and evaluate on the
    test split unless the loss became NaN or infinite, which stops training."""
    net, loss, task = member.net, member.loss, dataset.task
    x_train, x_val, x_test = dataset.x_train, dataset.x_val, dataset.x_test
    y_train, y_val, y_test = (
        encode_targets(y, member.encoding, dataset.classes)
        for y in (dataset.y_train, dataset.y_val, dataset.y_test)
    )
    epochs, batch_size = settings.epochs, settings.batch_size
    steps = math.ceil(len(x_train) / batch_size)
    optimizer = make_optimizer(member.optimizer_of(settings), member.learning_rate, steps)
    net.compile(
        loss=loss,
        optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if mixed(net) else optimizer,
        metrics=task_metrics(task, member.encoding),
        steps_per_execution=_per_execution(steps, settings.steps_per_execution),
        # XLA compiles each model anew, which costs more than it saves on these small MLPs.
        jit_compile=False,
    )
    # Built here rather than in the first traced step, where each slot is slow to create.
    net.optimizer.build(net.trainable_variables)
    batches = _pipeline(x_train, y_train, member.seed, epochs, batch_size)
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN(), _Unkept()]
    if settings.probe_size:
        size = settings.probe_size
        callbacks.append(Diagnostics(x_train[:size], y_train[:size], loss, member.model))
    val_metrics = task_metrics(task, member.encoding)
    result = TrainResult()
    callbacks.append(
        _EpochEnd(epochs, lambda: evaluate(net, x_val, y_val, loss, val_metrics), result, on_epoch)
    )
    # After _EpochEnd, which adds the validation metrics it watches to the epoch's logs.
    stopping = _early_stopping(member)
    callbacks += [stopping] if stopping else []
    start = time.perf_counter()
    net.fit(
        batches,
        epochs=epochs,
        # One pass over the pipeline for all epochs: it holds exactly this many batches each.
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,  # the pipeline shuffles, from the member's seed
        callbacks=callbacks,
    )
    result.train_seconds = time.perf_counter() - start
    if result.diverged_epoch is not None:
        return result
    if stopping is not None:
        # Keras's stopped_epoch is 0 when it did not stop: it never stops after the first.
        result.stopped_epoch = stopping.stopped_epoch or None
        result.best_epoch = stopping.best_epoch
    test = evaluate(net, x_test, y_test, loss, val_metrics)
    result.test = {f"test_{name}": value for name, value in test.items()}
    return result
