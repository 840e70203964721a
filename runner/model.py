"""The model: what a job's model is (:class:`ModelSpec`, with the output head that fits its
loss and task) and the Keras model built from it (:func:`build_model`).

:func:`build_model` is a function of the spec, the inputs and the seed only: a single job
and each member of a fused group build their model with it, the same way. Keras is
imported by the builder alone, so that a job's spec is resolved before its backend is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.config import Encoding, LossConfig, Task, UserError

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class OutputHead:
    """The last layer's width and activation, and the target encoding the loss expects."""

    units: int
    activation: str
    encoding: Encoding


def output_head(
    loss: LossConfig, output_activation: str, task: Task, classes: int | None
) -> OutputHead:
    """Match the loss to the dataset's task (as conf/loss/*.yaml declares what each loss
    needs), or refuse the pair before anything trains."""
    head = getattr(loss, task.value)
    if head is None:
        fits = Task.regression if task is Task.classification else Task.classification
        raise UserError(
            f"loss={loss.name} needs a {fits} dataset, but this dataset is {task}: "
            f"{'class labels' if task is Task.classification else 'continuous targets'} "
            f"cannot be scored by {loss.name}."
        )
    encoding = head.encoding
    if encoding is Encoding.binary and classes != 2:
        raise UserError(
            f"loss={loss.name} scores one 0/1 output, but this dataset has {classes} classes: "
            "use loss=categorical_crossentropy or loss=sparse_categorical_crossentropy."
        )
    if output_activation == "auto":
        output_activation = head.output_activation
    units = 1 if encoding in (Encoding.binary, Encoding.continuous) else classes
    return OutputHead(units=units, activation=output_activation, encoding=encoding)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model: a Dense hidden layer per width in ``units``, each with its activation, the
    ``head``, the initializer of every kernel, and whether the hidden layers compute in
    float16 (``train.mixed_precision``)."""

    units: tuple[int, ...]
    activations: tuple[str, ...]
    head: OutputHead
    kernel_initializer: str = "glorot_uniform"
    mixed_precision: bool = False


def weight_count(spec: ModelSpec, inputs: int) -> int:
    """The weights (kernels and biases) of the model ``spec`` on ``inputs`` features."""
    widths = [inputs, *spec.units, spec.head.units]
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


def build_model(spec: ModelSpec, inputs: int, seed: int) -> keras.Model:
    """Input -> Dense(units[i], activations[i]) for each hidden layer -> Dense(head), its
    initial weights drawn from ``seed``.

    Each layer's initializer gets its own seed, drawn from ``seed``, rather than the
    process's global one (``keras.utils.set_random_seed``, which imports TensorFlow
    whenever it is installed): the same model on either backend, in any order of jobs.

    ``mixed_precision``: the hidden layers compute in float16 (Keras's ``mixed_float16``:
    float32 weights), the output layer in float32, so that softmax and the loss do too. The
    policy is set per layer, never process-wide, so that the jobs sharing a sweep's process
    each get their own."""
    import keras

    hidden_dtype = "mixed_float16" if spec.mixed_precision else "float32"
    seeds = iter(np.random.default_rng(seed).integers(2**31 - 1, size=len(spec.units) + 1))
    x = features = keras.Input(shape=(inputs,), name="features")
    for i, (width, activation) in enumerate(zip(spec.units, spec.activations, strict=True)):
        x = keras.layers.Dense(
            width,
            activation=activation,
            kernel_initializer=seeded(spec.kernel_initializer, int(next(seeds))),
            dtype=hidden_dtype,
            name=f"hidden_{i}_{activation}",
        )(x)
    head = spec.head
    outputs = keras.layers.Dense(
        head.units,
        activation=head.activation,
        kernel_initializer=seeded(spec.kernel_initializer, int(next(seeds))),
        dtype="float32",
        name=f"output_{head.activation}",
    )(x)
    return keras.Model(features, outputs, name="mlp")


def seeded(identifier: str, seed: int) -> keras.initializers.Initializer:
    """The Keras initializer ``identifier`` drawing from ``seed``; one that draws nothing
    (``zeros``, ``ones``) as it is."""
    import keras

    initializer = keras.initializers.get(identifier)
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": seed})
