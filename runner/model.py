"""The model: what a job's model is (:class:`ModelSpec`, with the output head that fits its
loss and task) and the Keras model built from it (:func:`build_model`).

:func:`build_model` is a function of the spec, the inputs and the seed only: a single job,
each member of a fused group, and the model a fused family's program traces (with its
activations switched at run time) are built by it, the same way, on either backend; a
fused group's members of one spec share one such model, each with the initial weights its
own would have (:func:`initial_values`). Keras is imported by the builder alone, so that a
job's spec is resolved before its backend is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runner.activations import LAYERS, short_name
from runner.activations import function as activation_function
from runner.config import (
    DropoutKind,
    Encoding,
    LossConfig,
    Normalization,
    Position,
    Task,
    UserError,
)

if TYPE_CHECKING:
    import keras

    from runner.initial import Drawn


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


# model.kernel_initializer=auto: the initializer that keeps each activation's signal at a
# steady scale through depth. He et al. (2015) derived he_normal for relu and its kin;
# Klambauer et al. (2017) made lecun_normal part of SELU's self-normalization; anything
# else, the output layer and a user's function included, gets Keras's default.
AUTO_INITIALIZERS = {
    **dict.fromkeys(
        ("relu", "relu6", "leaky_relu", "elu", "celu", "gelu", "silu", "swish", "mish", "prelu"),
        "he_normal",
    ),
    "selu": "lecun_normal",
}
DEFAULT_INITIALIZER = "glorot_uniform"


def auto_initializer(activation: str) -> str:
    """The initializer ``model.kernel_initializer=auto`` gives a layer of ``activation``."""
    return AUTO_INITIALIZERS.get(activation, DEFAULT_INITIALIZER)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model: a Conv2D block per entry of ``filters`` (on inputs of ``image_shape``,
    height x width x channels), then a Dense hidden layer per width in ``units``; an
    activation per hidden layer (conv blocks first); the ``head``; each kernel's
    initializer (one per hidden layer, then the output layer's; empty: Keras's default for
    all); each hidden layer's normalization and where it sits, the rate and kind of the
    dropout at each hidden layer's end; whether the hidden layers compute in float16
    (``train.mixed_precision``); and the L2 penalty on every kernel (0: none)."""

    units: tuple[int, ...]
    activations: tuple[str, ...]
    head: OutputHead
    kernel_initializers: tuple[str, ...] = ()
    filters: tuple[int, ...] = ()
    kernel_size: int = 3
    image_shape: tuple[int, int, int] | None = None
    normalization: Normalization = Normalization.none
    normalization_position: Position = Position.before
    dropout: float = 0.0
    dropout_kind: DropoutKind = DropoutKind.dropout
    mixed_precision: bool = False
    l2: float = 0.0

    @property
    def hidden(self) -> int:
        """How many hidden layers: conv blocks and Dense layers."""
        return len(self.filters) + len(self.units)

    def initializers(self) -> tuple[str, ...]:
        """Each hidden layer's kernel initializer, then the output layer's."""
        return self.kernel_initializers or (DEFAULT_INITIALIZER,) * (self.hidden + 1)


def weight_count(spec: ModelSpec, inputs: int) -> int:
    """The weights of the model ``spec`` on ``inputs`` features: kernels and biases, and
    the normalizations' and PReLU's (Keras's ``count_params``)."""
    per_unit = {Normalization.none: 0, Normalization.batch: 4, Normalization.layer: 2}
    height, width, fan_in = spec.image_shape if spec.filters else (1, 1, inputs)
    count = 0
    for i, activation in enumerate(spec.activations):
        if i < len(spec.filters):
            out = spec.filters[i]
            count += spec.kernel_size**2 * fan_in * out
            height, width = -(-height // 2), -(-width // 2)
        else:
            out = spec.units[i - len(spec.filters)]
            count += height * width * fan_in * out
            height = width = 1
        bias = not (spec.normalization is Normalization.batch and before(spec))
        count += out * (bias + per_unit[spec.normalization] + (activation in LAYERS))
        fan_in = out
    return count + (height * width * fan_in + 1) * spec.head.units


def build_model(
    spec: ModelSpec, inputs: int, seed: int, functions: list[Callable | None] | None = None
) -> keras.Model:
    """Input -> each hidden layer (:func:`_hidden`) -> Dense(head), its initial weights
    drawn from ``seed``. ``functions``: for each hidden layer, a callable that takes the
    place of its activation (a fused family's run-time choice), or None.

    Each layer's initializer and dropout gets its own seed, drawn from ``seed``, rather
    than the process's global one (``keras.utils.set_random_seed``, which imports
    TensorFlow whenever it is installed): the same model in any order of jobs. Each
    kernel is drawn by numpy from its Keras initializer's distribution
    (:class:`runner.initial.Drawn`): no program to compile for it on JAX, and the same
    initial weights on either backend. The kernels' seeds are drawn first, as they were
    before the other layers existed, so that a model without them keeps its weights.

    ``mixed_precision``: the hidden layers compute in float16 (Keras's ``mixed_float16``:
    float32 weights), the output layer in float32, so that softmax and the loss do too. The
    policy is set per layer, never process-wide, so that the jobs sharing a sweep's process
    each get their own."""
    import keras

    from runner.initial import Drawn

    kernel_seeds, dropout_seeds = _seeds(spec, seed)
    kernels, dropouts = iter(kernel_seeds), iter(dropout_seeds)
    functions = functions or [None] * spec.hidden
    initializers = spec.initializers()
    x = features = keras.Input(shape=(inputs,), name="features")
    if spec.filters:
        x = keras.layers.Reshape(spec.image_shape, name="image")(x)
    for i in range(spec.hidden):
        if spec.filters and i == len(spec.filters):
            x = keras.layers.Flatten(name="flatten")(x)
        initializer = drawn(initializers[i], int(next(kernels)))
        x = _hidden(x, spec, i, initializer, functions[i], int(next(dropouts)))
    if spec.filters and not spec.units:
        x = keras.layers.Flatten(name="flatten")(x)
    head = spec.head
    outputs = keras.layers.Dense(
        head.units,
        activation=activation_function(head.activation),
        kernel_initializer=drawn(initializers[-1], int(next(kernels))),
        kernel_regularizer=_regularizer(spec),
        dtype="float32",
        name=f"output_{short_name(head.activation)}",
    )(x)
    net = keras.Model(features, outputs, name="cnn" if spec.filters else "mlp")
    for layer in net.layers:
        # Built: each layer gets Keras's initializer back, the one a saved model names.
        if isinstance(getattr(layer, "kernel_initializer", None), Drawn):
            layer.kernel_initializer = layer.kernel_initializer.named
    return net


def _seeds(spec: ModelSpec, seed: int) -> tuple[list[int], list[int]]:
    """The seeds :func:`build_model` gives each kernel's initializer (the hidden layers',
    then the output layer's) and each hidden layer's dropout, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    kernels = rng.integers(2**31 - 1, size=spec.hidden + 1)
    dropouts = rng.integers(2**31 - 1, size=spec.hidden)
    return [int(k) for k in kernels], [int(d) for d in dropouts]


def initial_values(
    net: keras.Model, spec: ModelSpec, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The initial values of the trainable and of the non-trainable variables that
    ``build_model(spec, inputs, seed)`` holds, taken from ``net``, a model of the same
    spec and inputs built with any seed: a fused group's member gets its weights without a
    Keras model of its own, which costs more than drawing them. Each kernel is drawn by
    its initializer with the member's seed, as the layer's ``build`` draws it, and each
    dropout's seed generator starts from the member's seed; every other variable (biases,
    normalizations, PReLU's slopes) starts from a constant that no seed changes, and is
    ``net``'s."""
    import keras

    kernel_seeds, dropout_seeds = _seeds(spec, seed)
    initializers = spec.initializers()
    layers = {layer.name: layer for layer in net.layers}
    kernels = [kernel for kernel, _ in hidden_layers(net, spec)] + [net.layers[-1]]
    own = {}
    for layer, name, each in zip(kernels, initializers, kernel_seeds, strict=True):
        variable = layer.kernel
        own[id(variable)] = drawn(name, each).values(tuple(variable.shape), variable.dtype)
    for i, each in enumerate(dropout_seeds):
        dropout = layers.get(f"hidden_{i}_dropout")
        if dropout is not None:
            state = dropout.seed_generator.state
            own[id(state)] = keras.random.SeedGenerator(each).state.value

    def values(variables: list) -> list[np.ndarray]:
        return [np.asarray(own.get(id(v), v.value)) for v in variables]

    return values(net.trainable_variables), values(net.non_trainable_variables)


def _regularizer(spec: ModelSpec):
    """``model.l2`` as Keras's L2 kernel regularizer; None at 0."""
    import keras

    return keras.regularizers.L2(spec.l2) if spec.l2 else None


def _hidden(x, spec: ModelSpec, i: int, initializer, function: Callable | None, seed: int):
    """Hidden layer ``i``: its kernel (Dense, or Conv2D in a conv block), its normalization
    before or after its activation, a conv block's pooling, and dropout. The activation
    is the kernel layer's own (``hidden_{i}_{activation}``) unless it must come apart from
    it, after a normalization or as a layer (PReLU): then the kernel layer is ``hidden_i``
    and the activation a layer of that name."""
    import keras

    name = spec.activations[i]
    conv = i < len(spec.filters)
    dtype = "mixed_float16" if spec.mixed_precision else "float32"
    norm = spec.normalization is not Normalization.none
    apart = name in LAYERS or (norm and before(spec))
    if function is None and name not in LAYERS:
        function = activation_function(name)
    # Batch normalization right after the kernel subtracts the batch's mean, the bias with
    # it: its gradient is 0 but for rounding, which Adam's steps would turn into noise. As
    # Keras's examples do, such a layer has none.
    batch_first = spec.normalization is Normalization.batch and before(spec)
    kernel = dict(
        use_bias=not batch_first,
        activation=None if apart else function,
        kernel_initializer=initializer,
        kernel_regularizer=_regularizer(spec),
        dtype=dtype,
        name=f"hidden_{i}" if apart else activation_layer_name(i, name),
    )
    if conv:
        x = keras.layers.Conv2D(spec.filters[i], spec.kernel_size, padding="same", **kernel)(x)
    else:
        x = keras.layers.Dense(spec.units[i - len(spec.filters)], **kernel)(x)
    if norm and before(spec):
        x = _normalization(spec, i, dtype)(x)
    named = dict(dtype=dtype, name=activation_layer_name(i, name))
    if name in LAYERS:
        # One slope per channel in a conv block, as He et al. (2015) learn them.
        x = keras.layers.PReLU(shared_axes=[1, 2] if conv else None, **named)(x)
    elif apart:
        x = keras.layers.Activation(function, **named)(x)
    if norm and spec.normalization_position is Position.after:
        x = _normalization(spec, i, dtype)(x)
    if conv:
        x = keras.layers.MaxPooling2D(2, padding="same", dtype=dtype, name=f"hidden_{i}_pool")(x)
    if spec.dropout:
        kind = {DropoutKind.dropout: "Dropout", DropoutKind.alpha_dropout: "AlphaDropout"}
        layer = getattr(keras.layers, kind[spec.dropout_kind])
        x = layer(spec.dropout, seed=seed, dtype=dtype, name=f"hidden_{i}_dropout")(x)
    return x


def before(spec: ModelSpec) -> bool:
    """Whether each hidden layer's normalization comes before its activation."""
    return spec.normalization_position is Position.before


def _normalization(spec: ModelSpec, i: int, dtype: str) -> keras.layers.Layer:
    import keras

    layer = {
        Normalization.batch: keras.layers.BatchNormalization,
        Normalization.layer: keras.layers.LayerNormalization,
    }[spec.normalization]
    return layer(dtype=dtype, name=f"hidden_{i}_{spec.normalization.value}_normalization")


def activation_layer_name(i: int, activation: str) -> str:
    """The name of the layer whose output is hidden layer ``i``'s activation."""
    return f"hidden_{i}_{short_name(activation)}"


def hidden_layers(net: keras.Model, spec: ModelSpec) -> list[tuple[keras.layers.Layer, ...]]:
    """Each hidden layer of ``net``, built from ``spec``, as (the layer with its kernel,
    the layer whose output is its activation): what the diagnostics watch."""
    layers = {layer.name: layer for layer in net.layers}
    found = []
    for i, activation in enumerate(spec.activations):
        output = layers[activation_layer_name(i, activation)]
        found.append((layers.get(f"hidden_{i}", output), output))
    return found


def drawn(identifier: str, seed: int) -> Drawn:
    """The Keras initializer ``identifier`` seeded with ``seed``, its values drawn by numpy
    (:class:`runner.initial.Drawn`)."""
    from runner.initial import Drawn

    return Drawn(seeded(identifier, seed), seed)


def seeded(identifier: str, seed: int) -> keras.initializers.Initializer:
    """The Keras initializer ``identifier`` drawing from ``seed``; one that draws nothing
    (``zeros``, ``ones``) as it is."""
    import keras

    initializer = keras.initializers.get(identifier)
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": seed})
