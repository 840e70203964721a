"""The families of a batch of models on JAX: which members one traced function serves
(:class:`Cohort`), and that function as a program traces it (:class:`Family`), each hidden
layer's activation a :class:`Choice` made at run time or compiled in (see
runner/engine/jax_engine.py)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import keras
import numpy as np

from runner.config import Encoding, losses_by_encoding
from runner.engine import Member, Settings
from runner.engine.common import make_optimizer, mixed
from runner.metrics import SATURATED

# What a sweep's single job's program can switch between at run time (a job with any other
# activation or loss gets a program of its own): common activations, and the losses of the
# config group ``loss`` by the target encoding they take (conf/loss/). Each branch adds to
# the tracing and compiling of the sweep's first program.
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "relu6", "gelu", "silu",
    "softplus", "linear",
)  # fmt: skip
LOSSES = losses_by_encoding()


def dense_layers(net: keras.Model) -> list[keras.layers.Dense]:
    """The model's Dense layers, hidden ones then the output: what a family is made of."""
    return [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]


def _never(out: jax.Array) -> jax.Array:
    return jnp.zeros(out.shape, bool)


class Choice:
    """A hidden layer's activation: one of ``names``, the one ``index`` picks while the
    program is traced (a traced integer, so chosen when the program runs). With a single
    name, that activation compiled in."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.functions = [keras.activations.get(name) for name in names]
        self.index: jax.Array | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if len(self.functions) == 1:
            return self.functions[0](x)
        return jax.lax.switch(self.index, self.functions, x)

    def saturated(self, out: jax.Array) -> jax.Array:
        """Whether each output sits in a flat tail of the chosen activation (never, for an
        activation without one)."""
        masks = [SATURATED.get(name, _never) for name in self.names]
        if len(masks) == 1:
            return masks[0](out)
        return jax.lax.switch(self.index, masks, out)


@dataclass(frozen=True)
class Cohort:
    """The members of a batch that one family's function serves: their places in the batch,
    the activations each hidden layer may take, the losses they may score with, and the
    target encoding they share."""

    positions: tuple[int, ...]
    layers: tuple[tuple[str, ...], ...]
    losses: tuple[str, ...]
    encoding: Encoding

    def key(self, members: list[Member]) -> tuple:
        """What the cohort's part of a program is traced for."""
        net = members[self.positions[0]].net
        shape = tuple((layer.units, layer.dtype_policy.name) for layer in dense_layers(net))
        head = net.layers[-1].activation.__name__
        return (shape, head, self.layers, self.losses, self.encoding.value, len(self.positions))

    def activation_indices(self, members: list[Member]) -> np.ndarray:
        """The members' hidden activations (the same for all), as indices into ``layers``."""
        own = members[self.positions[0]].activations
        return np.array([c.index(a) for c, a in zip(self.layers, own, strict=True)], np.int32)

    def loss_indices(self, members: list[Member]) -> np.ndarray:
        """Each member's loss, as an index into ``losses``."""
        return np.array([self.losses.index(members[p].loss) for p in self.positions], np.int32)


def cohorts(members: list[Member], switching: bool) -> list[Cohort]:
    """The batch's members by family: those whose models compute the same function of their
    weights, from targets of the same encoding. With ``switching``, a batch of one switches
    between the common activations and losses (see the module's docstring)."""
    by_function: dict[tuple, list[int]] = {}
    for position, member in enumerate(members):
        layers = tuple(
            # The activation's function name: get_config() would import TensorFlow to ask
            # whether it is there.
            (layer.units, layer.activation.__name__, layer.dtype_policy.name)
            for layer in dense_layers(member.net)
        )
        by_function.setdefault((layers, member.encoding), []).append(position)
    found = []
    for positions in by_function.values():
        first = members[positions[0]]
        layers = tuple((a,) for a in first.activations)
        losses = tuple(dict.fromkeys(members[p].loss for p in positions))
        if switching and len(members) == 1:
            if set(first.activations) <= set(ACTIVATIONS):
                layers = (ACTIVATIONS,) * len(layers)
            if first.loss in LOSSES[first.encoding]:
                losses = LOSSES[first.encoding]
        found.append(Cohort(tuple(positions), layers, losses, first.encoding))
    return found


@dataclass
class Family:
    """A cohort's function as a program traces it: ``net``, a model of the members' layers
    that belongs to the program, each hidden layer's activation a :class:`Choice`; ``tap``,
    the same model returning every hidden layer's output too; and an optimizer of the
    members' kind, whose variables the members' states fill. Each member brings its own
    weights, and scores its predictions with its own loss, one of ``losses``."""

    net: keras.Model
    tap: keras.Model
    choices: list[Choice]
    losses: tuple[str, ...]
    encoding: Encoding
    optimizer: keras.optimizers.Optimizer

    @classmethod
    def of(cls, cohort: Cohort, members: list[Member], settings: Settings) -> Family:
        first = members[cohort.positions[0]]
        choices = [Choice(names) for names in cohort.layers]
        *hidden, output = dense_layers(first.net)
        x = features = keras.Input(shape=first.net.input_shape[1:], name="features")
        outputs = []
        for layer, activation in [*zip(hidden, choices, strict=True), (output, output.activation)]:
            x = keras.layers.Dense(
                layer.units,
                activation=activation,
                kernel_initializer="zeros",  # the members bring their weights
                dtype=layer.dtype_policy,
                name=layer.name,
            )(x)
            outputs.append(x)
        net = keras.Model(features, x)
        tap = keras.Model(features, outputs)
        optimizer = make_optimizer(settings.optimizer, first.learning_rate)
        if mixed(net):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)
        return cls(net, tap, choices, cohort.losses, cohort.encoding, optimizer)

    @property
    def kernels(self) -> list[int]:
        """Where the hidden layers' kernels are in the trainable variables."""
        return [
            i
            for i, v in enumerate(self.net.trainable_variables)
            if v.path.startswith("hidden_") and v.path.endswith("/kernel")
        ]

    @contextmanager
    def choosing(self, activations: jax.Array):
        """Trace the family's model with each hidden layer's activation picked by
        ``activations``."""
        for choice, index in zip(self.choices, activations, strict=True):
            choice.index = index
        try:
            yield
        finally:
            for choice in self.choices:
                choice.index = None
