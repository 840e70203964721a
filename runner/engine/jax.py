"""Training on JAX: each job's own Keras model, trained the way Keras documents for JAX
(``model.stateless_call``, ``optimizer.stateless_apply`` and ``jax.grad``), one compiled
program an epoch.

The models of a batch fall into *families*: the same layers, activations and output head,
so the same function, fed targets of the same encoding. A family's models are one function
``jax.vmap``-ed over their stacked weights and optimizer states, learning rate included (a
Keras optimizer variable like any other), each member scoring its predictions with its own
loss; every family of the batch steps inside one ``lax.scan`` over the epoch's batches,
then validates and takes its diagnostics, all in one ``jax.jit`` program. Each model keeps
its own initial weights, learning rate, batch order (its seed's) and loss, and the models
share nothing, so each trains as it would alone: a single job is simply a batch of one.
(Alone and fused agree to float rounding: XLA may order a reduction differently for a
batch of another size, which chaotic training, such as a deep linear net's, can amplify
over many epochs.) Data goes to the device once; each epoch's logs come back once.

A single job of a sweep (``Settings.switching``) gets a program that takes its activations
and its loss as arguments rather than compiling them in, each chosen at run time
(``lax.switch``) among the common ones (:data:`ACTIVATIONS`, :data:`LOSSES`): the sweep's
next jobs in the same process, with other activations or losses, reuse it instead of
tracing and compiling their own. Branches cost tracing and compiling once, so a single run
and a fused batch (one program for the whole batch) keep theirs compiled in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import export
from tqdm import tqdm

from runner import backend, metrics, stop
from runner import engine as engine_shared
from runner.config import Encoding
from runner.data import Dataset, encode_targets
from runner.engine import (
    CHUNK,
    SATURATED,
    Member,
    OnEpoch,
    Settings,
    TrainResult,
    batch_orders,
    epoch_line,
    make_optimizer,
    mixed,
)
from runner.metrics import CLASSIFICATION, diagnostic_names, metric_names

log = logging.getLogger(__name__)

# What a batch of models may take on the CPU, where nothing reports free memory, and the
# share of a GPU's memory it may take.
CPU_BUDGET = 2 << 30
GPU_SHARE = 0.5


# What a sweep's single job's program can switch between at run time (a job with any other
# activation or loss gets a program of its own): common activations, and the losses of the
# config group ``loss`` by the target encoding they take. Each branch adds to the tracing
# and compiling of the sweep's first program.
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "leaky_relu", "relu6", "gelu", "silu",
    "softplus", "linear",
)  # fmt: skip
LOSSES = {
    Encoding.onehot: ("categorical_crossentropy", "mse", "mae"),
    Encoding.integer: ("sparse_categorical_crossentropy",),
    Encoding.binary: ("binary_crossentropy",),
    Encoding.continuous: ("mse", "mae", "huber"),
}


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
class Group:
    """The members of a batch that one family's function serves: their places in the batch,
    the activations each hidden layer may take, the losses they may score with, and the
    target encoding they share."""

    positions: tuple[int, ...]
    layers: tuple[tuple[str, ...], ...]
    losses: tuple[str, ...]
    encoding: Encoding

    def key(self, members: list[Member]) -> tuple:
        """What the group's part of a program is traced for."""
        net = members[self.positions[0]].net
        shape = tuple(
            (layer.units, layer.dtype_policy.name)
            for layer in net.layers
            if isinstance(layer, keras.layers.Dense)
        )
        head = net.layers[-1].activation.__name__
        return (shape, head, self.layers, self.losses, self.encoding.value, len(self.positions))

    def activations(self, members: list[Member]) -> np.ndarray:
        """The members' hidden activations (the same for all), as indices into ``layers``."""
        own = members[self.positions[0]].activations
        return np.array([c.index(a) for c, a in zip(self.layers, own, strict=True)], np.int32)

    def choices(self, members: list[Member]) -> np.ndarray:
        """Each member's loss, as an index into ``losses``."""
        return np.array([self.losses.index(members[p].loss) for p in self.positions], np.int32)


def groups(members: list[Member], switching: bool) -> list[Group]:
    """The batch's members by family: those whose models compute the same function of their
    weights, from targets of the same encoding. With ``switching``, a batch of one switches
    between the common activations and losses (see the module's docstring)."""
    by_function: dict[tuple, list[int]] = {}
    for position, member in enumerate(members):
        layers = tuple(
            # The activation's function name: get_config() would import TensorFlow to ask
            # whether it is there.
            (layer.units, layer.activation.__name__, layer.dtype_policy.name)
            for layer in member.net.layers
            if isinstance(layer, keras.layers.Dense)
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
        found.append(Group(tuple(positions), layers, losses, first.encoding))
    return found


@dataclass
class Family:
    """A group's function as a program traces it: ``net``, a model of the members' layers
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
    def of(cls, group: Group, members: list[Member], settings: Settings) -> Family:
        first = members[group.positions[0]]
        choices = [Choice(names) for names in group.layers]
        *hidden, output = (
            layer for layer in first.net.layers if isinstance(layer, keras.layers.Dense)
        )
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
        return cls(net, tap, choices, group.losses, group.encoding, optimizer)

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


def _scores(task: str, encoding: Encoding):
    """Per-sample metric values as Keras's ``accuracy`` (of the kind that fits the
    encoding), ``mae`` and ``rmse`` average them; ``rmse`` is carried squared."""
    if task != CLASSIFICATION:
        return lambda y, p: {
            "mae": jnp.mean(jnp.abs(y - p), axis=-1),
            "rmse": jnp.mean(jnp.square(y - p), axis=-1),
        }
    if encoding is Encoding.onehot:
        return lambda y, p: {"accuracy": (jnp.argmax(y, -1) == jnp.argmax(p, -1)).astype("f4")}
    if encoding is Encoding.integer:
        return lambda y, p: {"accuracy": (y == jnp.argmax(p, -1)).astype("f4")}
    return lambda y, p: {"accuracy": jnp.mean((y == (p > 0.5)).astype("f4"), axis=-1)}


# Every diagnostic a hidden layer can have (runner/metrics.py says which a layer logs).
DIAGNOSTICS = ("grad_norm", "dead_fraction", "saturated_fraction")


def _dead(out: jax.Array) -> jax.Array:
    return jnp.mean(jnp.all(out <= 0, axis=0).astype("f4"))


class Traced:
    """``function`` jitted, traced the first time it is called, and kept traced on disk
    (``jax.export``) under ``path`` for later processes: tracing the Keras models is most of
    what a program costs once XLA's persistent cache holds its compile. Without a ``path``
    (nowhere to keep it), or where the program cannot be exported, it is traced in every
    process as plain ``jax.jit`` does."""

    def __init__(self, function, path: Path | None, donate: tuple[int, ...] = ()):
        self.function = function
        self.path = path
        self.donate = donate
        self.compiled = None

    def __call__(self, *args):
        if self.compiled is None:
            self.compiled = self._load(args)
        return self.compiled(*args)

    def _load(self, args):
        jitted = jax.jit(self.function, donate_argnums=self.donate)
        if self.path is None:
            return jitted
        try:
            exported = export.deserialize(bytearray(self.path.read_bytes()))
            if not _fits(exported, args):
                raise ValueError("traced for other arguments")
        # Not there yet, damaged (a flatbuffer's reader raises whatever its bytes lead to), or
        # not this program's.
        except Exception:
            try:
                exported = export.export(jitted)(*args)
            except Exception as error:  # what export refuses varies by platform and version
                log.info("program not kept for later processes (%s)", error)
                return jitted
            self._keep(exported.serialize())
        return jax.jit(exported.call, donate_argnums=self.donate)

    def _keep(self, blob: bytearray) -> None:
        """Write the traced program beside the others, whole or not at all (another process
        may be writing the same one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial_file = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial_file.write_bytes(blob)
            partial_file.replace(self.path)
        except OSError as error:
            log.info("program not kept for later processes: %s", error)


def _fits(exported: export.Exported, args: tuple) -> bool:
    """Whether ``exported`` takes arguments of the structure, shapes and types of ``args``."""
    leaves, tree = jax.tree.flatten(args)
    return tree == exported.in_tree and [(a.shape, a.dtype) for a in exported.in_avals] == [
        (np.shape(x), np.result_type(x)) for x in leaves
    ]


def program_path(key: tuple, name: str) -> Path:
    """Where the traced program ``name`` of a program for ``key`` is kept: named by a digest
    of the key, the platform, the versions of JAX and Keras and the source of the engine,
    so that any change that could change the program gives it a new file."""
    digest = hashlib.sha256(repr(key).encode())
    digest.update(f"{jax.devices()[0].platform} {jax.__version__} {keras.__version__}".encode())
    for module in (sys.modules[__name__], engine_shared, metrics):
        digest.update(Path(module.__file__).read_bytes())
    return backend.cache_dir() / "programs" / f"{digest.hexdigest()[:32]}.{name}"


class Program:
    """The compiled epoch and test evaluation of one batch's families.

    It holds models of its own, functions of the weights the members bring, so a later
    batch of the same groups (the next job of a sweep, in the same process) reuses it
    without tracing or compiling again; a later process reuses its traced programs
    (:class:`Traced`)."""

    def __init__(
        self, families: list[Family], task: str, settings: Settings, samples: int, key: tuple
    ):
        self.families = families
        self.task = task
        self.batch_size = min(settings.batch_size, samples)
        self.probe = settings.probe_size and min(settings.probe_size, samples)
        self.epoch = Traced(self._epoch, program_path(key, "epoch"), donate=(0,))
        self.test = Traced(self._test, program_path(key, "test"))

    # One model's functions: vmapped over a family below.

    def _scale(self, family: Family, opt_vars: list) -> jax.Array:
        """The loss scale of a mixed-precision model's optimizer state; 1 otherwise."""
        if not isinstance(family.optimizer, keras.optimizers.LossScaleOptimizer):
            return jnp.float32(1)
        mapping = list(zip(family.optimizer.variables, opt_vars, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return family.optimizer.scale_loss(jnp.float32(1))

    def _loss(self, family: Family, choice, y: jax.Array, p: jax.Array) -> jax.Array:
        """Per-sample values of the member's own loss, ``family.losses[choice]``: vmapped
        over members, each branch is computed and each member takes its own."""
        losses = [keras.losses.get(name) for name in family.losses]
        if len(losses) == 1:
            return losses[0](y, p)
        return jax.lax.switch(choice, losses, y, p)

    def _sums(self, family: Family, choice, y: jax.Array, p: jax.Array) -> dict[str, jax.Array]:
        per_sample = self._loss(family, choice, y, p)
        scores = _scores(self.task, family.encoding)(y, p)
        return {"loss": jnp.sum(per_sample), **{k: jnp.sum(v) for k, v in scores.items()}}

    def _step(self, family: Family, state, rows, alive, choice, activations, x, y):
        trainable, non_trainable, opt_vars = state
        xb, yb = x[rows], y[rows]
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            p, non_trainable_after = family.net.stateless_call(
                trainable, non_trainable, xb, training=True
            )
            loss = jnp.mean(self._loss(family, choice, yb, p))
            return loss * scale, (loss, p, non_trainable_after)

        with family.choosing(activations):
            grads, (loss, p, non_trainable_after) = jax.grad(objective, has_aux=True)(trainable)
        trainable_after, opt_after = family.optimizer.stateless_apply(opt_vars, grads, trainable)
        # A frozen (diverged) model keeps its state; the others never depend on it.
        new = jax.tree.map(
            lambda after, before: jnp.where(alive, after, before),
            (trainable_after, non_trainable_after, opt_after),
            state,
        )
        sums = self._sums(family, choice, yb, p)
        sums["loss"] = loss * rows.shape[0]  # the batch mean, weighted as Keras's fit does
        return new, sums

    def _evaluate(self, family: Family, state, choice, activations, x, y):
        trainable, non_trainable, _ = state
        total = None
        for start in range(0, x.shape[0], CHUNK):
            with family.choosing(activations):
                p, _ = family.net.stateless_call(
                    trainable, non_trainable, x[start : start + CHUNK], training=False
                )
            sums = self._sums(family, choice, y[start : start + CHUNK], p)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        return total

    def _diagnose(self, family: Family, state, choice, activations, x, y):
        """Every diagnostic of every hidden layer; each member keeps those of its own
        activations (:func:`member_names`)."""
        trainable, non_trainable, opt_vars = state
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            outputs, _ = family.tap.stateless_call(trainable, non_trainable, x, training=False)
            loss = jnp.mean(self._loss(family, choice, y, outputs[-1]))
            return loss * scale, outputs

        with family.choosing(activations):
            grads, outputs = jax.grad(objective, has_aux=True)(trainable)
            logs = {}
            for i, (kernel, layer) in enumerate(zip(family.kernels, family.choices, strict=True)):
                gradient = grads[kernel].astype("f4") / scale
                logs[f"grad_norm/hidden_{i}"] = jnp.sqrt(jnp.sum(jnp.square(gradient)))
                logs[f"dead_fraction/hidden_{i}"] = _dead(outputs[i])
                saturated = layer.saturated(outputs[i])
                logs[f"saturated_fraction/hidden_{i}"] = jnp.mean(saturated.astype("f4"))
        return logs

    # The batch's programs.

    def log_names(self, family: Family, split: str = "") -> list[str]:
        """The names of a family's logs, in the order of the rows the programs return: an
        epoch's (``split`` ""), or the test split's (``split`` "test")."""
        scored = ["loss", *metric_names(self.task)]
        if split == "test":
            return scored
        names = [*scored, *(f"val_{name}" for name in scored)]
        if self.probe:
            for i in range(len(family.choices)):
                names += [f"{kind}/hidden_{i}" for kind in DIAGNOSTICS]
        return names

    def _epoch(self, states, batches, rest, alive, choices, activations, data):
        """One epoch of every family: ``batches`` are each family's ``[steps, M, batch]``
        sample indices, ``rest`` its ``[M, r]`` last partial batch (r may be 0), ``choices``
        its members' losses, ``activations`` its hidden layers'. Each family's logs come
        back as one ``[names, M]`` array."""

        def steps(carry, rows):
            states, sums = carry
            out_states, out_sums = [], []
            for f, family in enumerate(self.families):
                step = jax.vmap(partial(self._step, family), in_axes=(0, 0, 0, 0, None, None, None))
                state, step_sums = step(
                    states[f],
                    rows[f],
                    alive[f],
                    choices[f],
                    activations[f],
                    data["x"]["train"],
                    data["y"][f]["train"],
                )
                out_states.append(state)
                out_sums.append(jax.tree.map(jnp.add, sums[f], step_sums))
            return (out_states, out_sums), None

        zeros = [
            {name: jnp.zeros(len(choices[f])) for name in self.log_names(family, "test")}
            for f, family in enumerate(self.families)
        ]
        (states, sums), _ = jax.lax.scan(steps, (list(states), zeros), batches)
        if rest[0].shape[1]:
            (states, sums), _ = steps((states, sums), rest)
        logs = []
        samples = batches[0].shape[0] * batches[0].shape[2] + rest[0].shape[1]
        for f, family in enumerate(self.families):
            x, y = data["x"], data["y"][f]
            family_logs = {name: value / samples for name, value in sums[f].items()}
            evaluate = jax.vmap(partial(self._evaluate, family), in_axes=(0, 0, None, None, None))
            val = evaluate(states[f], choices[f], activations[f], x["val"], y["val"])
            family_logs.update({f"val_{k}": v / x["val"].shape[0] for k, v in val.items()})
            if self.probe:
                diagnose = jax.vmap(
                    partial(self._diagnose, family), in_axes=(0, 0, None, None, None)
                )
                probe = (x["train"][: self.probe], y["train"][: self.probe])
                family_logs.update(diagnose(states[f], choices[f], activations[f], *probe))
            logs.append(jnp.stack([family_logs[name] for name in self.log_names(family)]))
        return states, logs

    def _test(self, states, choices, activations, data):
        logs = []
        for f, family in enumerate(self.families):
            x, y = data["x"]["test"], data["y"][f]["test"]
            evaluate = jax.vmap(partial(self._evaluate, family), in_axes=(0, 0, None, None, None))
            test = evaluate(states[f], choices[f], activations[f], x, y)
            logs.append(
                jnp.stack([test[name] / x.shape[0] for name in self.log_names(family, "test")])
            )
        return logs


# Programs by the shapes and functions they were traced for: the jobs of a sweep in one
# process mostly repeat a few.
_programs: dict[tuple, Program] = {}


def _state(family: Family, group: Group, members: list[Member]) -> tuple:
    """The group's weights and optimizer state, stacked member by member in numpy (one
    transfer to the device, no small programs to compile); the optimizer variable
    ``learning_rate`` holds each member's own."""
    own = [members[p] for p in group.positions]

    def stacked(pick) -> list[np.ndarray]:
        count = len(pick(own[0].net))
        return [np.stack([np.asarray(pick(m.net)[i].value) for m in own]) for i in range(count)]

    trainable = stacked(lambda net: net.trainable_variables)
    non_trainable = stacked(lambda net: net.non_trainable_variables)
    opt_vars = []
    for v in family.optimizer.variables:
        if v.path.rsplit("/", 1)[-1] == "learning_rate":
            opt_vars.append(np.asarray([m.learning_rate for m in own], v.dtype))
        else:
            value = np.asarray(v.value)
            opt_vars.append(np.repeat(value[None], len(own), axis=0))
    return jax.device_put((trainable, non_trainable, opt_vars))


def bytes_per_model(member: Member, settings: Settings, samples: int) -> int:
    """About what one model takes in a batch: its weights four times over (weights,
    gradients and two optimizer slots) twice (before and after a step), and its layers'
    outputs for a training batch, an evaluation chunk and the probe."""
    weights = sum(int(np.prod(v.shape)) for v in member.net.trainable_variables)
    widths = sum(
        layer.units for layer in member.net.layers if isinstance(layer, keras.layers.Dense)
    )
    rows = min(settings.batch_size, samples) * 3 + CHUNK + (settings.probe_size or 0) * 2
    return 4 * (8 * weights + rows * widths)


def budget() -> int:
    """The bytes a batch of models may take: a share of the GPU's memory, or a fixed
    budget on the CPU."""
    device = jax.devices()[0]
    if device.platform == "gpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] * GPU_SHARE)
    return CPU_BUDGET


def train(
    members: list[Member],
    dataset: Dataset,
    settings: Settings,
    on_epoch: OnEpoch | None = None,
) -> list[TrainResult]:
    """Train ``members`` in as few batches as memory allows; return one result each."""
    samples = len(dataset.x_train)
    per_batch = max(1, budget() // bytes_per_model(members[0], settings, samples))
    if per_batch < len(members):
        log.info(
            "%d models exceed the memory budget of one program: training them in %d batches",
            len(members),
            math.ceil(len(members) / per_batch),
        )
    results: list[TrainResult] = []
    for start in range(0, len(members), per_batch):
        batch = members[start : start + per_batch]
        results += _train_batch(
            batch,
            dataset,
            settings,
            on_epoch and (lambda m, epoch, logs, start=start: on_epoch(start + m, epoch, logs)),
        )
    return results


def _train_batch(
    members: list[Member], dataset: Dataset, settings: Settings, on_epoch: OnEpoch | None
) -> list[TrainResult]:
    found = groups(members, settings.switching)
    samples = len(dataset.x_train)
    key = (
        tuple(group.key(members) for group in found),
        settings.optimizer.name,
        settings.optimizer.momentum,
        settings.batch_size,
        settings.probe_size,
        dataset.task,
        dataset.classes,
        dataset.x_train.shape,
        dataset.x_val.shape,
        dataset.x_test.shape,
    )
    program = _programs.get(key)
    if program is None:
        families = [Family.of(group, members, settings) for group in found]
        program = _programs[key] = Program(families, dataset.task, settings, samples, key)
    data = jax.device_put(
        {
            "x": {"train": dataset.x_train, "val": dataset.x_val, "test": dataset.x_test},
            "y": [
                {
                    split: encode_targets(y, group.encoding, dataset.classes)
                    for split, y in (
                        ("train", dataset.y_train),
                        ("val", dataset.y_val),
                        ("test", dataset.y_test),
                    )
                }
                for group in found
            ],
        }
    )
    states = [
        _state(family, group, members)
        for family, group in zip(program.families, found, strict=True)
    ]
    choices = jax.device_put([group.choices(members) for group in found])
    activations = jax.device_put([group.activations(members) for group in found])
    names = [program.log_names(f) for f in program.families]
    diagnostics = [own_diagnostics(m) for m in members]
    orders = [batch_orders(samples, m.seed) for m in members]
    alive = np.ones(len(members), bool)
    results = [TrainResult(history={}) for _ in members]
    size = program.batch_size
    full = samples // size * size
    start = time.perf_counter()
    ends = []
    # A batch of models shows its progress on a terminal (tqdm: epochs, models still
    # training, elapsed and remaining time); elsewhere, and for a single job, each epoch
    # is a log line.
    progress = tqdm(
        total=settings.epochs,
        desc=f"{len(members)} models",
        unit="epoch",
        disable=True if len(members) == 1 else None,
        leave=False,
    )
    for epoch in range(settings.epochs):
        # A signal whose KeyboardInterrupt was lost (raised inside a finalizer, such as
        # JAX's garbage-collection callback) stops the training here, after the last epoch
        # it has logged.
        stop.check()
        order = np.stack([next(o) for o in orders])
        batches, rest = [], []
        for group in found:
            rows = order[list(group.positions)]
            count = len(group.positions)
            batches.append(rows[:, :full].reshape(count, -1, size).transpose(1, 0, 2))
            rest.append(rows[:, full:])
        living = [alive[list(group.positions)] for group in found]
        states, logs = program.epoch(states, batches, rest, living, choices, activations, data)
        logs = jax.device_get(logs)
        ends.append(time.perf_counter())
        for group, family_names, family_logs in zip(found, names, logs, strict=True):
            columns = _columns(family_names, family_logs)
            for i, m in enumerate(group.positions):
                if not alive[m]:
                    continue
                values = {
                    name: column[i]
                    for name, column in columns.items()
                    if "/" not in name or name in diagnostics[m]
                }
                for name, value in values.items():
                    results[m].history.setdefault(name, []).append(value)
                if not math.isfinite(values["loss"]):
                    results[m].diverged_epoch = epoch
                    alive[m] = False
                if on_epoch is not None:
                    on_epoch(m, epoch, values)
        if progress.disable:
            _log_epoch(epoch, settings.epochs, results, alive)
        progress.set_postfix_str(f"{alive.sum()} training", refresh=False)
        progress.update()
        if not alive.any():
            break
    progress.close()
    test = jax.device_get(program.test(states, choices, activations, data))
    # The models trained together: each is charged an equal share of the epochs' time (as
    # on TensorFlow, the test split's evaluation is not training), less what compiling added
    # to the first epoch (the first epoch counted as a median one), so that compiling shows
    # as overhead, not as training.
    seconds = ends[-1] - start
    if len(ends) > 1:
        epoch = float(np.median(np.diff(ends)))
        compiling = max(0.0, ends[0] - start - epoch)
        seconds -= compiling
        log.info(
            "trained %d model(s) on %s: %.2f s compiling, then %.2f ms an epoch",
            len(members),
            jax.devices()[0].platform,
            compiling,
            1000 * epoch,
        )
    _write_back(found, members, states)
    share = seconds / len(members)
    for family, group, family_test in zip(program.families, found, test, strict=True):
        columns = _columns(program.log_names(family, "test"), family_test)
        for i, m in enumerate(group.positions):
            results[m].train_seconds = share
            if results[m].diverged_epoch is None:
                results[m].test = {f"test_{name}": column[i] for name, column in columns.items()}
    return results


def own_diagnostics(member: Member) -> set[str]:
    """The diagnostics a member logs, those of its activations: its program computes every
    kind for every layer."""
    return {
        name
        for layer, activation in enumerate(member.activations)
        for name in diagnostic_names(layer, activation)
    }


def _write_back(found: list[Group], members: list[Member], states: list) -> None:
    """Set the trained weights of each member that keeps them into its own Keras model;
    the others' stay on the device, where they are freed with the batch."""
    for group, state in zip(found, states, strict=True):
        kept = [(i, members[m]) for i, m in enumerate(group.positions) if members[m].keep_weights]
        if not kept:
            continue
        trainable, non_trainable = jax.device_get(state[:2])
        for i, member in kept:
            for variables, stacked in (
                (member.net.trainable_variables, trainable),
                (member.net.non_trainable_variables, non_trainable),
            ):
                for variable, value in zip(variables, stacked, strict=True):
                    variable.assign(value[i])


def _columns(names: list[str], rows: np.ndarray) -> dict[str, list[float]]:
    """A family's ``[names, M]`` logs as one list of floats per name, as Keras reports
    them: ``rmse`` was carried as a mean square."""
    columns = {}
    for name, row in zip(names, rows, strict=True):
        if name.rsplit("_", 1)[-1] == "rmse":
            row = np.sqrt(row)
        columns[name] = row.tolist()
    return columns


def _log_epoch(epoch: int, epochs: int, results: list[TrainResult], alive: np.ndarray) -> None:
    if len(results) == 1:
        last = {name: values[-1] for name, values in results[0].history.items()}
        log.info("%s", epoch_line(epoch, epochs, last))
        return
    val_losses = [r.history["val_loss"][-1] for r, a in zip(results, alive, strict=True) if a]
    log.info(
        "epoch %d/%d  %d of %d models training%s",
        epoch + 1,
        epochs,
        alive.sum(),
        len(results),
        f"  val_loss {min(val_losses):.4g} to {max(val_losses):.4g}" if val_losses else "",
    )
