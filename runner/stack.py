"""Many MLPs trained as one computation: the stacked model behind fused sweeps.

M models of the same widths, trained on the same data with the same optimizer settings,
become one set of tensors: each layer's kernels one ``[M, in, out]`` variable and its biases
one ``[M, out]``, so a step is one batched matmul per layer instead of M small ones. Each
model keeps what makes it itself: its initial weights (copied from its own Keras model, built
as a single job builds it), its activation per layer (applied to its own slice), its loss
with its own target encoding, and the order of its training batches (drawn from its own
seed, as a single job draws it). The loss minimised is the sum of the models' own
losses; since the models share no parameter and Adam's (and SGD's, RMSprop's) update is
element-wise, each model's gradient and update are exactly its own: a fused model's
per-epoch metrics equal the same model trained alone, up to float rounding.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from runner import stop
from runner.config import Encoding, OptimizerConfig
from runner.data import CLASSIFICATION, Dataset, encode_targets
from runner.diagnostics import RELU_FAMILY, SATURATION
from runner.train import (
    CHUNK,
    TrainResult,
    batch_orders,
    custom_gradients_released,
    make_optimizer,
    metric_names,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One model of a stack: its Keras model (for its initial weights and layer
    activations), its loss, the target encoding that loss needs, and its seed, which fixes
    the order of its training batches."""

    net: keras.Model
    loss: str
    encoding: Encoding
    seed: int


def _indices(values: list) -> list[tuple[object, tf.Tensor]]:
    """Each distinct value with the positions that hold it, in order of first appearance."""
    distinct = list(dict.fromkeys(values))
    return [
        (value, tf.constant([i for i, v in enumerate(values) if v == value], tf.int32))
        for value in distinct
    ]


def _per_group(z: tf.Tensor, groups: list[tuple[object, tf.Tensor]], apply: Callable) -> tf.Tensor:
    """``apply(value, slice)`` on the models' slices of ``z`` (axis 0) group by group."""
    if len(groups) == 1:
        return apply(groups[0][0], z)
    parts = [apply(value, tf.gather(z, positions)) for value, positions in groups]
    return tf.dynamic_stitch([positions for _, positions in groups], parts)


def _scores(task: str, encoding: Encoding) -> Callable[[tf.Tensor, tf.Tensor], dict]:
    """Per-sample metric values, as Keras's ``accuracy`` (of the kind that fits the
    encoding) or ``mae`` and ``rmse`` average them over an epoch. ``rmse`` is carried as
    the squared error and rooted at the end."""
    if task != CLASSIFICATION:
        return lambda y, p: {
            "mae": tf.reduce_mean(tf.abs(y - p), axis=-1),
            "rmse": tf.reduce_mean(tf.square(y - p), axis=-1),
        }
    if encoding is Encoding.onehot:
        return lambda y, p: {
            "accuracy": tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(p, -1)), tf.float32)
        }
    if encoding is Encoding.integer:
        return lambda y, p: {
            "accuracy": tf.cast(tf.equal(tf.cast(y, tf.int64), tf.argmax(p, -1)), tf.float32)
        }
    return lambda y, p: {
        "accuracy": tf.reduce_mean(tf.cast(tf.equal(y, tf.cast(p > 0.5, y.dtype)), tf.float32), -1)
    }


class Stack:
    """The models of ``members`` as one: :meth:`train` fits them all and returns one
    :class:`TrainResult` per member, in order."""

    def __init__(
        self,
        members: list[Member],
        dataset: Dataset,
        optimizer: OptimizerConfig,
        batch_size: int,
        probe_size: int | None,
    ):
        self.members = members
        self.size = len(members)
        self.task = dataset.task
        self.batch_size = batch_size
        dense = [
            [layer for layer in m.net.layers if isinstance(layer, keras.layers.Dense)]
            for m in members
        ]
        depth = len(dense[0])
        self.kernels = [
            keras.Variable(np.stack([d[i].kernel.numpy() for d in dense]), name=f"kernel_{i}")
            for i in range(depth)
        ]
        self.biases = [
            keras.Variable(np.stack([d[i].bias.numpy() for d in dense]), name=f"bias_{i}")
            for i in range(depth)
        ]
        self.variables = [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]
        # Activation names per layer, model by model: the last layer is the output head.
        self.activation_names = [
            [d[i].get_config()["activation"] for d in dense] for i in range(depth)
        ]
        self.activations = [_indices(names) for names in self.activation_names]
        self.alive = tf.Variable(tf.ones([self.size], tf.bool), trainable=False)

        self.x = {
            "train": tf.constant(dataset.x_train),
            "val": tf.constant(dataset.x_val),
            "test": tf.constant(dataset.x_test),
        }
        raw = {"train": dataset.y_train, "val": dataset.y_val, "test": dataset.y_test}
        self.loss_groups = []
        for (loss, encoding), positions in _indices([(m.loss, m.encoding) for m in members]):
            targets = {
                split: tf.constant(encode_targets(y, encoding, dataset.classes))
                for split, y in raw.items()
            }
            self.loss_groups.append(
                (positions, keras.losses.get(loss), _scores(self.task, encoding), targets)
            )
        self.metric_names = metric_names(self.task)

        self.optimizer = make_optimizer(optimizer)
        self.optimizer.build(self.variables)
        # The probe is the first ``probe_size`` training samples, as for a single job.
        self.probe_size = probe_size and min(probe_size, len(dataset.x_train))
        # Traced without AutoGraph, whose conversion of these methods and of the Keras code
        # they call was half of the 2.6 s that tracing them took; the epoch's loop is a
        # ``tf.while_loop`` written out instead.
        self._train_epoch = tf.function(self._epoch, autograph=False)
        self._evaluate_chunk = tf.function(self._chunk, reduce_retracing=True, autograph=False)
        self._probe = tf.function(self._diagnose, autograph=False)

    def forward(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Every layer's outputs, ``[M, rows, units]``; ``x`` is one ``[rows, features]``
        batch that all models see, or ``[M, rows, features]``, one batch per model."""
        outputs = []
        h = x
        for kernel, bias, groups in zip(self.kernels, self.biases, self.activations, strict=True):
            z = tf.einsum("bi,mio->mbo", h, kernel) if h.shape.rank == 2 else tf.matmul(h, kernel)
            z = z + bias[:, None, :]
            h = _per_group(z, groups, lambda name, part: keras.activations.get(name)(part))
            outputs.append(h)
        return outputs

    def _per_sample(
        self, predictions: tf.Tensor, rows: tf.Tensor, split: str
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Each model's loss and metric values per sample, ``[M, rows]``, scored against
        its own encoding of the targets of ``rows`` (``[M, rows]``, indices into
        ``split``)."""
        losses, scores = [], {name: [] for name in self.metric_names}
        for positions, loss, score, targets in self.loss_groups:
            y = tf.gather(targets[split], tf.gather(rows, positions))
            p = tf.gather(predictions, positions)
            losses.append(loss(y, p))
            for name, value in score(y, p).items():
                scores[name].append(value)
        everyone = [positions for positions, *_ in self.loss_groups]
        stitch = (
            (lambda parts: parts[0])
            if len(everyone) == 1
            else (lambda parts: tf.dynamic_stitch(everyone, parts))
        )
        return stitch(losses), {name: stitch(parts) for name, parts in scores.items()}

    def _epoch(self, order: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """One epoch over ``order`` (``[M, samples]``, each model's own sample order), a
        batch at a time; each model's mean loss and metrics over the epoch, weighted by
        batch size as Keras's ``fit`` reports them."""
        samples = tf.shape(order)[1]

        def step(start, loss_sum, score_sums):
            rows = order[:, start : start + self.batch_size]
            with tf.GradientTape() as tape:
                predictions = self.forward(tf.gather(self.x["train"], rows))[-1]
                losses, scores = self._per_sample(predictions, rows, "train")
                means = tf.reduce_mean(losses, axis=1)
                # A diverged model drops out of the sum; its siblings' gradients never
                # depended on it.
                total = tf.reduce_sum(tf.where(self.alive, means, 0.0))
            gradients = tape.gradient(total, self.variables)
            self.optimizer.apply_gradients(zip(gradients, self.variables, strict=True))
            rows_in_batch = tf.cast(tf.shape(rows)[1], tf.float32)
            return (
                start + self.batch_size,
                loss_sum + means * rows_in_batch,
                {
                    name: score_sums[name] + tf.reduce_sum(scores[name], axis=1)
                    for name in self.metric_names
                },
            )

        zeros = tf.zeros([self.size])
        _, loss_sum, score_sums = tf.while_loop(
            lambda start, *_: start < samples,
            step,
            (tf.constant(0), zeros, {name: zeros for name in self.metric_names}),
        )
        count = tf.cast(samples, tf.float32)
        return loss_sum / count, {name: s / count for name, s in score_sums.items()}

    def _chunk(self, x: tf.Tensor, rows: tf.Tensor, split: str) -> tuple[tf.Tensor, dict]:
        predictions = self.forward(x)[-1]
        losses, scores = self._per_sample(predictions, rows, split)
        return tf.reduce_sum(losses, axis=1), {
            name: tf.reduce_sum(value, axis=1) for name, value in scores.items()
        }

    def evaluate(self, split: str) -> list[dict[str, float]]:
        """Each model's loss and metrics on a whole split, in chunks of :data:`CHUNK` rows."""
        x = self.x[split]
        total = len(x)
        loss_sum = np.zeros(self.size)
        score_sums = {name: np.zeros(self.size) for name in self.metric_names}
        for start in range(0, total, CHUNK):
            end = min(start + CHUNK, total)
            rows = tf.tile(tf.range(start, end)[None, :], [self.size, 1])
            losses, scores = self._evaluate_chunk(x[start:end], rows, split)
            loss_sum += losses.numpy()
            for name, value in scores.items():
                score_sums[name] += value.numpy()
        return self._per_model(loss_sum / total, {k: v / total for k, v in score_sums.items()})

    def _per_model(self, loss: np.ndarray, scores: dict[str, np.ndarray]) -> list[dict]:
        values = [{"loss": float(loss[m])} for m in range(self.size)]
        for name, per_model in scores.items():
            root = np.sqrt if name == "rmse" else (lambda v: v)
            for m in range(self.size):
                values[m][name] = float(root(per_model[m]))
        return values

    def _diagnose(self, x: tf.Tensor, rows: tf.Tensor) -> list[dict[str, tf.Tensor]]:
        """Per hidden layer, each model's ``[M]`` statistics on the probe batch (see
        runner/diagnostics.py): the loss gradient's norm with respect to the kernel, the
        fraction of dead units and of saturated outputs, all in one traced call."""
        with tf.GradientTape() as tape:
            outputs = self.forward(x)
            losses, _ = self._per_sample(outputs[-1], rows, "train")
            total = tf.reduce_sum(tf.reduce_mean(losses, axis=1))
        gradients = tape.gradient(total, self.kernels[:-1])
        layers = []
        for gradient, output in zip(gradients, outputs[:-1], strict=True):
            stats = {
                "grad_norm": tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1, 2])),
                "dead": tf.reduce_mean(tf.cast(tf.reduce_all(output <= 0, axis=1), tf.float32), -1),
            }
            for name, test in SATURATION.items():
                stats[name] = tf.reduce_mean(tf.cast(test(output), tf.float32), axis=[1, 2])
            layers.append(stats)
        return layers

    def diagnostics(self) -> list[dict[str, float]]:
        """Each model's per-layer diagnostics, named as a single job names them."""
        rows = tf.tile(tf.range(self.probe_size)[None, :], [self.size, 1])
        layers = self._probe(self.x["train"][: self.probe_size], rows)
        values = [{} for _ in range(self.size)]
        for i, stats in enumerate(layers):
            stats = {name: value.numpy() for name, value in stats.items()}
            for m in range(self.size):
                activation = self.activation_names[i][m]
                values[m][f"grad_norm/hidden_{i}"] = float(stats["grad_norm"][m])
                if activation in RELU_FAMILY:
                    values[m][f"dead_fraction/hidden_{i}"] = float(stats["dead"][m])
                elif activation in SATURATION:
                    values[m][f"saturated_fraction/hidden_{i}"] = float(stats[activation][m])
        return values

    # The traced epoch applies Keras's optimizer, which would leave its graph alive after
    # training (see runner/train.py).
    @custom_gradients_released()
    def train(
        self,
        epochs: int,
        on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    ) -> list[TrainResult]:
        """Train every model for ``epochs`` epochs; after each, ``on_epoch(model, epoch,
        logs)`` gets a model's logs as a single job's would be. A model whose loss stops
        being finite is diverged from that epoch: its logs stop and it leaves the sum."""
        samples = len(self.x["train"])
        orders = np.stack([batch_orders(samples, m.seed, epochs) for m in self.members], axis=1)
        results = [TrainResult(history={}) for _ in range(self.size)]
        alive = np.ones(self.size, bool)
        start = time.perf_counter()
        for epoch in range(epochs):
            loss, scores = self._train_epoch(tf.constant(orders[epoch]))
            stop.check()
            train_logs = self._per_model(loss.numpy(), {k: v.numpy() for k, v in scores.items()})
            diagnostics = self.diagnostics() if self.probe_size else [{}] * self.size
            validation = self.evaluate("val")
            for m in np.flatnonzero(alive):
                logs = {
                    **train_logs[m],
                    **diagnostics[m],
                    **{f"val_{name}": value for name, value in validation[m].items()},
                }
                for name, value in logs.items():
                    results[m].history.setdefault(name, []).append(value)
                if not math.isfinite(logs["loss"]):
                    results[m].diverged_epoch = epoch
                    alive[m] = False
                if on_epoch is not None:
                    on_epoch(m, epoch, logs)
            self.alive.assign(alive)
            if not alive.any():
                break
            val_losses = [validation[m]["loss"] for m in np.flatnonzero(alive)]
            log.info(
                "epoch %d/%d  %d of %d models training  val_loss %.4g to %.4g",
                epoch + 1,
                epochs,
                alive.sum(),
                self.size,
                min(val_losses),
                max(val_losses),
            )
        # The models trained together: each is charged an equal share of the time.
        share = (time.perf_counter() - start) / self.size
        test = self.evaluate("test")
        for m, result in enumerate(results):
            result.train_seconds = share
            if result.diverged_epoch is None:
                result.test = {f"test_{name}": value for name, value in test[m].items()}
        return results
