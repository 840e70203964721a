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
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import keras
import numpy as np
from tqdm import tqdm

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
from runner.metrics import CLASSIFICATION, RELU_FAMILY, diagnostic_names, metric_names

log = logging.getLogger(__name__)

# What a batch of models may take on the CPU, where nothing reports free memory, and the
# share of a GPU's memory it may take.
CPU_BUDGET = 2 << 30
GPU_SHARE = 0.5


@dataclass
class Family:
    """Models that are one function: the first member's Keras model (``net``) and a model
    over the same layers that also returns every hidden layer's output (``tap``) serve them
    all, each with its own weights. Each member scores its predictions with its own loss, one
    of ``losses`` (the same target encoding); ``positions`` are the members' places in the
    batch."""

    net: keras.Model
    tap: keras.Model
    losses: tuple[str, ...]
    encoding: Encoding
    activations: tuple[str, ...]
    optimizer: keras.optimizers.Optimizer
    positions: list[int]

    @property
    def kernels(self) -> list[int]:
        """Where the hidden layers' kernels are in the trainable variables."""
        return [
            i
            for i, v in enumerate(self.net.trainable_variables)
            if v.path.startswith("hidden_") and v.path.endswith("/kernel")
        ]


def family_key(member: Member) -> tuple:
    """Equal for two members whose models compute the same function of their weights, from
    targets of the same encoding."""
    layers = tuple(
        # The activation's function name: get_config() would import TensorFlow to ask
        # whether it is there.
        (layer.units, layer.activation.__name__, layer.dtype_policy.name)
        for layer in member.net.layers
        if isinstance(layer, keras.layers.Dense)
    )
    return (layers, member.encoding.value)


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


def _dead(out: jax.Array) -> jax.Array:
    return jnp.mean(jnp.all(out <= 0, axis=0).astype("f4"))


class Program:
    """The compiled epoch and test evaluation of one batch's families.

    It holds the first batch's Keras models only as functions of their weights, so a later
    batch of the same shapes (the next job of a sweep, in the same process) reuses it
    without tracing or compiling again."""

    def __init__(self, families: list[Family], task: str, settings: Settings, samples: int):
        self.families = families
        self.task = task
        self.batch_size = min(settings.batch_size, samples)
        self.probe = settings.probe_size and min(settings.probe_size, samples)
        self.epoch = jax.jit(self._epoch, donate_argnums=0)
        self.test = jax.jit(self._test)

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

    def _step(self, family: Family, state, rows, alive, choice, x, y):
        trainable, non_trainable, opt_vars = state
        xb, yb = x[rows], y[rows]
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            p, non_trainable_after = family.net.stateless_call(
                trainable, non_trainable, xb, training=True
            )
            loss = jnp.mean(self._loss(family, choice, yb, p))
            return loss * scale, (loss, p, non_trainable_after)

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

    def _evaluate(self, family: Family, state, choice, x, y):
        trainable, non_trainable, _ = state
        total = None
        for start in range(0, x.shape[0], CHUNK):
            p, _ = family.net.stateless_call(
                trainable, non_trainable, x[start : start + CHUNK], training=False
            )
            sums = self._sums(family, choice, y[start : start + CHUNK], p)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        return total

    def _diagnose(self, family: Family, state, choice, x, y):
        trainable, non_trainable, opt_vars = state
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            outputs, _ = family.tap.stateless_call(trainable, non_trainable, x, training=False)
            loss = jnp.mean(self._loss(family, choice, y, outputs[-1]))
            return loss * scale, outputs

        grads, outputs = jax.grad(objective, has_aux=True)(trainable)
        logs = {}
        for i, (kernel, activation) in enumerate(
            zip(family.kernels, family.activations, strict=True)
        ):
            gradient = grads[kernel].astype("f4") / scale
            logs[f"grad_norm/hidden_{i}"] = jnp.sqrt(jnp.sum(jnp.square(gradient)))
            if activation in RELU_FAMILY:
                logs[f"dead_fraction/hidden_{i}"] = _dead(outputs[i])
            elif activation in SATURATED:
                saturated = SATURATED[activation](outputs[i])
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
            for i, activation in enumerate(family.activations):
                names += diagnostic_names(i, activation)
        return names

    def _epoch(self, states, batches, rest, alive, choices, data):
        """One epoch of every family: ``batches`` are each family's ``[steps, M, batch]``
        sample indices, ``rest`` its ``[M, r]`` last partial batch (r may be 0), ``choices``
        its members' losses. Each family's logs come back as one ``[names, M]`` array."""

        def steps(carry, rows):
            states, sums = carry
            out_states, out_sums = [], []
            for f, family in enumerate(self.families):
                step = jax.vmap(partial(self._step, family), in_axes=(0, 0, 0, 0, None, None))
                state, step_sums = step(
                    states[f],
                    rows[f],
                    alive[f],
                    choices[f],
                    data["x"]["train"],
                    data["y"][f]["train"],
                )
                out_states.append(state)
                out_sums.append(jax.tree.map(jnp.add, sums[f], step_sums))
            return (out_states, out_sums), None

        zeros = [
            {name: jnp.zeros(len(family.positions)) for name in self.log_names(family, "test")}
            for family in self.families
        ]
        (states, sums), _ = jax.lax.scan(steps, (list(states), zeros), batches)
        if rest[0].shape[1]:
            (states, sums), _ = steps((states, sums), rest)
        logs = []
        samples = batches[0].shape[0] * batches[0].shape[2] + rest[0].shape[1]
        for f, family in enumerate(self.families):
            x, y = data["x"], data["y"][f]
            family_logs = {name: value / samples for name, value in sums[f].items()}
            evaluate = jax.vmap(partial(self._evaluate, family), in_axes=(0, 0, None, None))
            val = evaluate(states[f], choices[f], x["val"], y["val"])
            family_logs.update({f"val_{k}": v / x["val"].shape[0] for k, v in val.items()})
            if self.probe:
                diagnose = jax.vmap(partial(self._diagnose, family), in_axes=(0, 0, None, None))
                probe = (x["train"][: self.probe], y["train"][: self.probe])
                family_logs.update(diagnose(states[f], choices[f], *probe))
            logs.append(jnp.stack([family_logs[name] for name in self.log_names(family)]))
        return states, logs

    def _test(self, states, choices, data):
        logs = []
        for f, family in enumerate(self.families):
            x, y = data["x"]["test"], data["y"][f]["test"]
            evaluate = jax.vmap(partial(self._evaluate, family), in_axes=(0, 0, None, None))
            test = evaluate(states[f], choices[f], x, y)
            logs.append(
                jnp.stack([test[name] / x.shape[0] for name in self.log_names(family, "test")])
            )
        return logs


# Programs by the shapes and functions they were traced for: the jobs of a sweep in one
# process mostly repeat a few.
_programs: dict[tuple, Program] = {}


def _families(members: list[Member], settings: Settings) -> list[Family]:
    by_key: dict[tuple, list[int]] = {}
    for position, member in enumerate(members):
        by_key.setdefault(family_key(member), []).append(position)
    families = []
    for positions in by_key.values():
        first = members[positions[0]]
        net = first.net
        hidden = [layer for layer in net.layers if layer.name.startswith("hidden_")]
        tap = keras.Model(net.inputs, [layer.output for layer in hidden] + [net.output])
        optimizer = make_optimizer(settings.optimizer, first.learning_rate)
        if mixed(net):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)
        losses = tuple(dict.fromkeys(members[p].loss for p in positions))
        families.append(
            Family(net, tap, losses, first.encoding, first.activations, optimizer, positions)
        )
    return families


def _state(family: Family, members: list[Member]) -> tuple:
    """The family's weights and optimizer state, stacked member by member in numpy (one
    transfer to the device, no small programs to compile); the optimizer variable
    ``learning_rate`` holds each member's own."""
    own = [members[p] for p in family.positions]

    def stacked(pick) -> list[np.ndarray]:
        count = len(pick(family.net))
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
    families = _families(members, settings)
    samples = len(dataset.x_train)
    key = (
        tuple((family_key(members[f.positions[0]]), f.losses, len(f.positions)) for f in families),
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
        program = _programs[key] = Program(families, dataset.task, settings, samples)
    data = jax.device_put(
        {
            "x": {"train": dataset.x_train, "val": dataset.x_val, "test": dataset.x_test},
            "y": [
                {
                    split: encode_targets(y, f.encoding, dataset.classes)
                    for split, y in (
                        ("train", dataset.y_train),
                        ("val", dataset.y_val),
                        ("test", dataset.y_test),
                    )
                }
                for f in families
            ],
        }
    )
    states = [_state(f, members) for f in families]
    choices = [
        jax.device_put(np.array([f.losses.index(members[p].loss) for p in f.positions], np.int32))
        for f in families
    ]
    names = [program.log_names(f) for f in program.families]
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
        order = np.stack([next(o) for o in orders])
        batches, rest = [], []
        for f in families:
            rows = order[f.positions]
            batches.append(rows[:, :full].reshape(len(f.positions), -1, size).transpose(1, 0, 2))
            rest.append(rows[:, full:])
        living = [alive[f.positions] for f in families]
        states, logs = program.epoch(states, batches, rest, living, choices, data)
        logs = jax.device_get(logs)
        ends.append(time.perf_counter())
        for f, family_names, family_logs in zip(families, names, logs, strict=True):
            columns = _columns(family_names, family_logs)
            for i, m in enumerate(f.positions):
                if not alive[m]:
                    continue
                values = {name: column[i] for name, column in columns.items()}
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
    test = jax.device_get(program.test(states, choices, data))
    # The models trained together: each is charged an equal share of the time, less what
    # compiling added to the first epoch (the first epoch counted as a median one), so that
    # compiling shows as overhead, not as training.
    seconds = time.perf_counter() - start
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
    _write_back(families, members, states)
    share = seconds / len(members)
    for f, family_test in zip(families, test, strict=True):
        columns = _columns(program.log_names(f, "test"), family_test)
        for i, m in enumerate(f.positions):
            results[m].train_seconds = share
            if results[m].diverged_epoch is None:
                results[m].test = {f"test_{name}": column[i] for name, column in columns.items()}
    return results


def _write_back(families: list[Family], members: list[Member], states: list) -> None:
    """Set the trained weights of each member that keeps them into its own Keras model;
    the others' stay on the device, where they are freed with the batch."""
    for f, state in zip(families, states, strict=True):
        kept = [(i, members[m]) for i, m in enumerate(f.positions) if members[m].keep_weights]
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
