"""The model: hidden Dense layers with one activation each, then an output head that fits
the loss and the task.

:func:`build_model` is a function of (inputs, units, activations, head, seed) only: a
single job and each member of a fused sweep build their model with it, the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from runner.config import Encoding, LossConfig, UserError
from runner.data import CLASSIFICATION, REGRESSION


@dataclass(frozen=True)
class OutputHead:
    """The last layer's width and activation, and the target encoding the loss expects."""

    units: int
    activation: str
    encoding: Encoding


def output_head(
    loss: LossConfig, output_activation: str, task: str, classes: int | None
) -> OutputHead:
    """Match the loss to the dataset's task, or refuse the pair before anything trains."""
    head = loss[task]
    if head is None:
        fits = REGRESSION if task == CLASSIFICATION else CLASSIFICATION
        raise UserError(
            f"loss={loss.name} needs a {fits} dataset, but this dataset is {task}: "
            f"{'class labels' if task == CLASSIFICATION else 'continuous targets'} cannot be "
            f"scored by {loss.name}."
        )
    encoding = head.encoding
    if encoding is Encoding.binary and classes != 2:
        raise UserError(
            f"loss={loss.name} scores one 0/1 output, but this dataset has {classes} classes: "
            "use loss=categorical_crossentropy or loss=sparse_categorical_crossentropy."
        )
    if output_activation == "auto":
        output_activation = head.output_activation
    if encoding in (Encoding.binary, Encoding.continuous):
        units = 1
    else:
        units = classes
    return OutputHead(units=units, activation=output_activation, encoding=encoding)


def build_model(
    inputs: int,
    units: list[int],
    activations: list[str],
    head: OutputHead,
    kernel_initializer: str = "glorot_uniform",
    mixed_precision: bool = False,
    seed: int = 0,
) -> keras.Model:
    """Input -> Dense(units[i], activations[i]) for each hidden layer -> Dense(head), its
    initial weights drawn from ``seed``.

    Each layer's initializer gets its own seed, drawn from ``seed``, rather than the
    process's global one (``keras.utils.set_random_seed``, which imports TensorFlow
    whenever it is installed): the same model on either backend, in any order of jobs.

    ``mixed_precision``: the hidden layers compute in float16 (Keras's ``mixed_float16``:
    float32 weights), the output layer in float32, so that softmax and the loss do too. The
    policy is set per layer, never process-wide, so that the jobs sharing a sweep's process
    each get their own."""
    hidden_dtype = "mixed_float16" if mixed_precision else "float32"
    seeds = iter(np.random.default_rng(seed).integers(2**31 - 1, size=len(units) + 1).tolist())
    x = features = keras.Input(shape=(inputs,), name="features")
    for i, (width, activation) in enumerate(zip(units, activations, strict=True)):
        x = keras.layers.Dense(
            width,
            activation=activation,
            kernel_initializer=seeded(kernel_initializer, next(seeds)),
            dtype=hidden_dtype,
            name=f"hidden_{i}_{activation}",
        )(x)
    outputs = keras.layers.Dense(
        head.units,
        activation=head.activation,
        kernel_initializer=seeded(kernel_initializer, next(seeds)),
        dtype="float32",
        name=f"output_{head.activation}",
    )(x)
    return keras.Model(features, outputs, name="mlp")


def seeded(identifier: str, seed: int) -> keras.initializers.Initializer:
    """The Keras initializer ``identifier`` drawing from ``seed``; one that draws nothing
    (``zeros``, ``ones``) as it is."""
    initializer = keras.initializers.get(identifier)
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": seed})
