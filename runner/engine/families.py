"""The families of a batch of models on JAX: which members one traced function serves
(:class:`Cohort`: the same model spec but for its initial weights), and that function as a
program traces it (:class:`Family`, built from the members' spec by the one model
builder), each hidden layer's activation a :class:`Choice` made at run time or compiled in
(see runner/engine/jax_engine.py)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import keras
import numpy as np

from runner.activations import function as activation_function
from runner.activations import is_user, source_digest
from runner.config import Encoding, losses_by_encoding
from runner.engine import Member, OptimizerKind, Settings
from runner.engine.common import make_optimizer, mixed, schedule
from runner.metrics import SATURATED
from runner.model import ModelSpec, build_model, hidden_layers

# What a sweep's single job's program can switch between at run time (a job with any other
# activation or loss gets a program of its own): common activations, and the losses of the
# config group ``loss`` by the target encoding they take (conf/loss/). Each branch adds to
# the tracing and compiling of the sweep's first program.
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "relu6", "gelu", "silu",
    "softplus", "linear",
)  # fmt: skip
LOSSES = losses_by_encoding()
# A short sweep's dense families that differ only in their hidden activations, all of them
# common ones, train as one cohort, each member's activations chosen when the program runs:
# one function to trace and compile instead of one an activation, at the cost of every
# member computing each of the cohort's activations, each epoch (on 2 cores, a cold compile
# about 1 s shorter for 9 to 32 digits MLPs, each epoch about a third longer: bench/README.md,
# "A small fused group's first compile"). So only where the members' epochs together are at
# most this many, where the compile saved outweighs the training added; never for conv
# nets, whose activations take a larger share of an epoch.
MIXED_WORK = 320


def _never(out: jax.Array) -> jax.Array:
    return jnp.zeros(out.shape, bool)


class Choice:
    """A hidden layer's activation: one of ``names``, the one ``index`` picks while the
    program is traced (a traced integer, so chosen when the program runs; vmapped over a
    cohort's members, each member's own, every branch computed). With a single name, the
    layer's own activation is compiled in, and the choice only says which it is."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.functions = [activation_function(name) for name in names] if len(names) > 1 else []
        self.index: jax.Array | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.lax.switch(self.index, self.functions, x)

    def saturated(self, out: jax.Array) -> jax.Array:
        """Whether each output sits in a flat tail of the chosen activation (never, for an
        activation without one)."""
        masks = [SATURATED.get(name, _never) for name in self.names]
        if len(masks) == 1:
            return masks[0](out)
        return jax.lax.switch(self.index, masks, out)


def bucket(count: int) -> int:
    """The number of members a program is traced for, for ``count`` members: 1 to 4 as
    they are, then the next of 6, 8, 12, 16, 24, 32, then the next multiple of 8. Sweeps
    of nearby small sizes (9 jobs, then 12) share one kept program, at the cost of at most
    a third of its members being padding. A large family pads to within 8, since its
    padding is training time: a large sweep's groups hold families of any size, and one
    of 65 members padded to 96 trains as long as 96."""
    if count <= 4:
        return count
    if count > 32:
        return -(-count // 8) * 8
    size = 4
    while size < count:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def fitting(limit: int) -> int:
    """The most members whose padded program (:func:`bucket`) has at most ``limit``; 1
    at least."""
    count = max(1, limit)
    while count > 1 and bucket(count) > limit:
        count -= 1
    return count


def _function(spec: ModelSpec) -> ModelSpec:
    """What makes the function of a model of ``spec``: all of it but its initial weights."""
    return replace(spec, kernel_initializers=())


def _shape(spec: ModelSpec) -> ModelSpec:
    """The function of a model of ``spec`` but its hidden activations."""
    return replace(_function(spec), activations=())


def _common(activations: tuple[str, ...]) -> bool:
    """Whether each of ``activations`` is a common one, which a program may switch to."""
    return set(activations) <= set(ACTIVATIONS)


@dataclass(frozen=True)
class Cohort:
    """The members of a batch that one family's function serves: their places in the batch,
    the activations each hidden layer may take, the losses they may score with, and the
    target encoding they share; ``varied``: the members' hidden activations differ (each
    member's are its own, chosen at run time). ``slots``: the places the program computes,
    the members' then the first member's again as padding (:func:`bucket`), whose results
    are dropped."""

    positions: tuple[int, ...]
    layers: tuple[tuple[str, ...], ...]
    losses: tuple[str, ...]
    encoding: Encoding
    varied: bool = False

    @property
    def slots(self) -> tuple[int, ...]:
        padding = bucket(len(self.positions)) - len(self.positions)
        return self.positions + (self.positions[0],) * padding

    def key(self, members: list[Member]) -> tuple:
        """What the cohort's part of a program is traced for: its model but its hidden
        activations (``layers`` says those), its optimizer, and the code of the user's
        activations."""
        spec = members[self.positions[0]].model
        optimizer = members[self.positions[0]].optimizer
        model = _shape(spec)
        names = {*(n for names in self.layers for n in names), spec.head.activation}
        code = tuple(source_digest(name) for name in sorted(names) if is_user(name))
        return (
            model,
            self.layers,
            self.varied,
            self.losses,
            self.encoding.value,
            len(self.slots),
            optimizer,
            code,
        )

    def activation_indices(self, members: list[Member]) -> np.ndarray:
        """The members' hidden activations as indices into ``layers``: ``[layers]``, the same
        for all, or, for a varied cohort, each slot's own, ``[slots, layers]``."""

        def indices(member: Member) -> list[int]:
            return [c.index(a) for c, a in zip(self.layers, member.activations, strict=True)]

        if self.varied:
            return np.array([indices(members[p]) for p in self.slots], np.int32)
        return np.array(indices(members[self.positions[0]]), np.int32)

    def loss_indices(self, members: list[Member]) -> np.ndarray:
        """Each member's loss, as an index into ``losses``."""
        return np.array([self.losses.index(members[p].loss) for p in self.slots], np.int32)


def cohorts(
    members: list[Member], switching: bool, widest: int | None = None, epochs: int | None = None
) -> list[Cohort]:
    """The batch's members by family: those whose models compute the same function of their
    weights, from targets of the same encoding, with optimizers of the same kind (the
    families of a sweep of ``epochs`` that differ only in their common hidden activations
    as one, where ``MIXED_WORK`` says so; None: never); a family of more than ``widest``
    members (None: no limit) as several cohorts of at most that many, in order. With
    ``switching``, a batch of one switches between the common activations and losses (see
    the module's docstring)."""
    by_function: dict[tuple, list[int]] = {}
    for position, member in enumerate(members):
        own = (_function(member.model), member.encoding, member.optimizer)
        by_function.setdefault(own, []).append(position)
    found = []
    grouped = list(by_function.values())
    if epochs is not None:
        grouped = _merged(members, grouped, epochs)
    for family in grouped:
        width = widest or len(family)
        for start in range(0, len(family), width):
            found.append(_cohort(members, family[start : start + width], switching))
    return found


def _merged(members: list[Member], families: list[list[int]], epochs: int) -> list[list[int]]:
    """``families`` (positions of members), the dense ones that differ only in their hidden
    activations, all common ones, as one where they train at most ``MIXED_WORK`` member
    epochs in all; each in the order of its first member."""
    by_shape: dict[object, list[list[int]]] = {}
    for family in families:
        first = members[family[0]]
        shape = object()  # a family of its own
        if _common(first.activations) and not first.model.filters:
            shape = (_shape(first.model), first.encoding, first.optimizer)
        by_shape.setdefault(shape, []).append(family)
    found = []
    for alike in by_shape.values():
        if sum(map(len, alike)) * epochs <= MIXED_WORK:
            found.append(sorted(p for family in alike for p in family))
        else:
            found += alike
    return sorted(found)


def _cohort(members: list[Member], positions: list[int], switching: bool) -> Cohort:
    """The cohort of the members at ``positions``, all of one family, or of families that
    differ only in their common hidden activations."""
    first = members[positions[0]]
    own = {members[p].activations for p in positions}
    # Each layer's activations; several (all common ones) in one order, whatever the sweep's.
    used = [{a[i] for a in own} for i in range(len(first.activations))]
    layers = tuple(tuple(n for n in ACTIVATIONS if n in u) if len(u) > 1 else (*u,) for u in used)
    losses = tuple(dict.fromkeys(members[p].loss for p in positions))
    if switching and len(members) == 1:
        if _common(first.activations):
            layers = (ACTIVATIONS,) * len(layers)
        if first.loss in LOSSES[first.encoding]:
            losses = LOSSES[first.encoding]
    return Cohort(tuple(positions), layers, losses, first.encoding, varied=len(own) > 1)


@dataclass
class Family:
    """A cohort's function as a program traces it: ``net``, a model of the members' spec
    built by :func:`runner.model.build_model` that belongs to the program, each hidden
    layer's activation a :class:`Choice`; ``tap``, the same model returning every hidden
    layer's activation too; ``kernels``, where the hidden layers' kernels are in its
    trainable variables; and an optimizer of the members' kind, whose variables the
    members' states fill. Each member brings its own weights and state (a normalization's
    moving statistics, a dropout's seed), and scores its predictions with its own loss,
    one of ``losses``. The optimizer's learning rate is a variable: each member's state
    holds its own rate, from which its ``schedule`` (with ``steps`` an epoch) computes the
    rate of each step."""

    net: keras.Model
    tap: keras.Model
    kernels: list[int]
    choices: list[Choice]
    losses: tuple[str, ...]
    encoding: Encoding
    optimizer: keras.optimizers.Optimizer
    kind: OptimizerKind
    steps: int
    varied: bool

    @classmethod
    def of(cls, cohort: Cohort, members: list[Member], settings: Settings, steps: int) -> Family:
        first = members[cohort.positions[0]]
        choices = [Choice(names) for names in cohort.layers]
        # The members bring their weights: the program's own need not be drawn.
        spec = replace(first.model, kernel_initializers=("zeros",) * (first.model.hidden + 1))
        switched = [choice if len(choice.names) > 1 else None for choice in choices]
        net = build_model(spec, first.net.input_shape[1], 0, switched)
        hidden = hidden_layers(net, spec)
        tap = keras.Model(net.inputs, [output.output for _, output in hidden] + [net.output])
        where = {id(v): i for i, v in enumerate(net.trainable_variables)}
        kernels = [where[id(kernel.kernel)] for kernel, _ in hidden]
        kind = first.optimizer_of(settings)
        optimizer = make_optimizer(kind, first.learning_rate)
        if mixed(net):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)
        return cls(
            net,
            tap,
            kernels,
            choices,
            cohort.losses,
            cohort.encoding,
            optimizer,
            kind,
            steps,
            cohort.varied,
        )

    def _slot(self, variable: keras.Variable) -> int:
        return next(i for i, v in enumerate(self.optimizer.variables) if v is variable)

    def rate(self, opt_vars: list) -> jax.Array:
        """The learning rate a member's next step takes, from its optimizer state: its own
        rate, or where its schedule has brought it."""
        own = opt_vars[self._slot(self.optimizer.learning_rate)]
        rule = schedule(self.kind.schedule, own, self.steps)
        return own if rule is None else rule(opt_vars[self._slot(self.optimizer.iterations)])

    def apply(self, opt_vars: list, grads: list, trainable: list) -> tuple[list, list]:
        """The optimizer's ``stateless_apply`` for one member, at the rate its schedule gives
        this step (as Keras's optimizer holding the schedule computes it); the state it
        returns keeps the member's own rate."""
        slot = self._slot(self.optimizer.learning_rate)
        stepping = list(opt_vars)
        stepping[slot] = self.rate(opt_vars)
        trainable_after, opt_after = self.optimizer.stateless_apply(stepping, grads, trainable)
        opt_after = list(opt_after)
        opt_after[slot] = opt_vars[slot]
        return trainable_after, opt_after

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
