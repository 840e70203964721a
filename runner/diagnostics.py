"""Per-layer evidence of how the hidden layers train: gradient norms, dead and saturated
units, measured at each epoch's end on a fixed probe batch of training samples.

- ``grad_norm/hidden_i``: the L2 norm of the loss gradient with respect to layer i's
  kernel. Vanishing gradients show as a first layer's norm orders of magnitude below the
  last's.
- ``dead_fraction/hidden_i`` (relu family): the fraction of units whose output is <= 0 for
  every probe sample. For relu such a unit gets no gradient from any of them and cannot
  recover; for leaky_relu, elu and selu it still gets one, so there it measures units
  stuck on the negative side, not death.
- ``saturated_fraction/hidden_i`` (sigmoid, tanh): the fraction of unit outputs, over all
  probe samples, in the flat tails where the derivative is tiny: sigmoid below 0.01 or
  above 0.99, tanh beyond +-0.99.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

RELU_FAMILY = {"relu", "relu6", "leaky_relu", "elu", "selu"}
SATURATION = {
    "sigmoid": lambda out: (out < 0.01) | (out > 0.99),
    "tanh": lambda out: tf.abs(out) > 0.99,
}


class Diagnostics(keras.callbacks.Callback):
    """Adds the diagnostics of every hidden layer to the epoch's logs."""

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, loss: str, activations: list[str]):
        super().__init__()
        self.x = tf.constant(x_probe)
        self.y = tf.constant(y_probe)
        self.loss = keras.losses.get(loss)
        self.activations = activations
        self.probe = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        hidden = [layer for layer in self.model.layers if layer.name.startswith("hidden_")]
        outputs = [layer.output for layer in hidden] + [self.model.output]
        tap = keras.Model(self.model.inputs, outputs)
        kernels = [layer.kernel for layer in hidden]
        optimizer = self.model.optimizer

        # One traced function: a forward and backward pass per epoch, without the eager
        # overhead that would add more than the 10 % of training time allowed here.
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
            zip(gradients, outputs, self.activations, strict=True)
        ):
            logs[f"grad_norm/hidden_{i}"] = float(tf.norm(gradient))
            if activation in RELU_FAMILY:
                dead = tf.reduce_all(output <= 0, axis=0)
                logs[f"dead_fraction/hidden_{i}"] = float(tf.reduce_mean(tf.cast(dead, tf.float32)))
            elif activation in SATURATION:
                saturated = SATURATION[activation](output)
                logs[f"saturated_fraction/hidden_{i}"] = float(
                    tf.reduce_mean(tf.cast(saturated, tf.float32))
                )
