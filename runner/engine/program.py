"""The compiled programs of a batch of models on JAX: one epoch of every family, and the
test split's evaluation (:class:`Program`), each traced once and kept on disk for later
processes (:class:`Traced`)."""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import suppress
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import export

from runner import activations, backend, metrics, model, stop
from runner.config import Encoding, Task
from runner.engine import CHUNK, Settings
from runner.engine.families import Family
from runner.metrics import metric_names

log = logging.getLogger("runner.engine")


def _scores(task: Task, encoding: Encoding):
    """Per-sample metric values as Keras's ``accuracy`` (of the kind that fits the
    encoding), ``mae`` and ``rmse`` average them; ``rmse`` is carried squared."""
    if task is not Task.classification:
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
DIAGNOSTICS = ("grad_norm", "median_activation", "dead_fraction", "saturated_fraction")


def _dead(out: jax.Array) -> jax.Array:
    """The share of units (a conv block's: channels) whose output is <= 0 for every probe
    sample, everywhere in the image."""
    return jnp.mean(jnp.all(out <= 0, axis=tuple(range(out.ndim - 1))).astype("f4"))


def _median_activation(out: jax.Array) -> jax.Array:
    """The median over units (a conv block's: channels) of each unit's mean output on the
    probe samples (and positions): the quantity of Clevert et al. 2015's MNIST study."""
    return jnp.median(jnp.mean(out.astype("f4"), axis=tuple(range(out.ndim - 1))))


def _only(values: jax.Array, real: jax.Array | None) -> jax.Array:
    """Per-sample ``values``, zero where ``real`` (None: all) does not mark a sample."""
    return values if real is None else jnp.where(real, values, 0)


def pick(mask: jax.Array, chosen: jax.Array, base: jax.Array) -> jax.Array:
    """A family's stacked values (members first): ``chosen``'s for the members ``mask``
    marks, ``base``'s for the others."""
    return jnp.where(mask.reshape(-1, *(1,) * (chosen.ndim - 1)), chosen, base)


def _own(family: Family) -> int | None:
    """How a family's activation indices map over its members: each member's own (a varied
    cohort's), or the same for all."""
    return 0 if family.varied else None


class Traced:
    """``function`` jitted, traced the first time it is called, and kept traced on disk
    (``jax.export``) under ``path`` for later processes: tracing the Keras models is most of
    what a program costs once XLA's persistent cache holds its compile. Where the program
    cannot be exported, or not written, it is traced in every process as plain ``jax.jit``
    does."""

    def __init__(self, function, path: Path, donate: tuple[int, ...] = ()):
        self.function = function
        self.path = path
        self.donate = donate
        self.compiled = None

    def __call__(self, *args):
        if self.compiled is not None:
            return self.compiled(*args)
        # Tracing, exporting and compiling interleave Python and C++ (MLIR, XLA): a
        # KeyboardInterrupt raised in the middle corrupted the process's heap, which
        # crashed it at exit. A signal waits until the program is compiled and has run once.
        with stop.held():
            self.compiled = self._load(args)
            return self.compiled(*args)

    def _load(self, args):
        jitted = jax.jit(self.function, donate_argnums=self.donate)
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
        may be writing the same one); a part written is removed when the rest fails."""
        partial_file = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial_file.write_bytes(blob)
            partial_file.replace(self.path)
        except OSError as error:
            # Where the folder could not be made, there is nothing to remove either.
            with suppress(OSError):
                partial_file.unlink(missing_ok=True)
            log.info("program not kept for later processes: %s", error)


def _fits(exported: export.Exported, args: tuple) -> bool:
    """Whether ``exported`` takes arguments of the structure, shapes and types of ``args``
    (its tree is that of the positional and the keyword arguments, none here)."""
    leaves, tree = jax.tree.flatten((args, {}))
    return tree == exported.in_tree and [(a.shape, a.dtype) for a in exported.in_avals] == [
        (np.shape(x), np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x))
        for x in leaves
    ]


def program_path(key: tuple, name: str) -> Path:
    """Where the traced program ``name`` of a program for ``key`` is kept: named by a digest
    of the key, the platform, the versions of JAX and Keras and the source of the engine
    and of the model builder, so that any change that could change the program gives it a
    new file."""
    digest = hashlib.sha256(repr(key).encode())
    digest.update(f"{jax.devices()[0].platform} {jax.__version__} {keras.__version__}".encode())
    builder = [Path(m.__file__) for m in (metrics, model, activations)]
    for source in [*sorted(Path(__file__).parent.glob("*.py")), *builder]:
        digest.update(source.read_bytes())
    return backend.cache_dir() / "programs" / f"{digest.hexdigest()[:32]}.{name}"


def pads(families: list[Family]) -> bool:
    """Whether a program of ``families`` pads an epoch's last partial batch to a full one
    whose padding weighs nothing, so that one compiled step serves every batch (a second
    step of the partial batch's shape made XLA's compile a third to a half longer,
    bench/README.md). Not where a model normalizes by batch: its statistics would take the
    padding in."""
    return not any(
        isinstance(layer, keras.layers.BatchNormalization)
        for family in families
        for layer in family.net.layers
    )


class Program:
    """The compiled epoch and test evaluation of one batch's families.

    It holds models of its own, functions of the weights the members bring, so a later
    batch of the same cohorts (the next job of a sweep, in the same process) reuses it
    without tracing or compiling again; a later process reuses its traced programs
    (:class:`Traced`)."""

    def __init__(
        self, families: list[Family], task: Task, settings: Settings, samples: int, key: tuple
    ):
        self.families = families
        self.task = task
        self.samples = samples
        self.batch_size = min(settings.batch_size, samples)
        self.pads = pads(families)
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

    def _loss(self, family: Family, loss_index, y: jax.Array, p: jax.Array) -> jax.Array:
        """Per-sample values of the member's own loss, ``family.losses[loss_index]``: vmapped
        over members, each branch is computed and each member takes its own."""
        losses = [keras.losses.get(name) for name in family.losses]
        if len(losses) == 1:
            return losses[0](y, p)
        return jax.lax.switch(loss_index, losses, y, p)

    def _sums(
        self, family: Family, loss_index, y: jax.Array, p: jax.Array, real: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """The sums of the loss and the metrics over the samples, those ``real`` marks."""
        per_sample = {
            "loss": self._loss(family, loss_index, y, p),
            **_scores(self.task, family.encoding)(y, p),
        }
        return {k: jnp.sum(_only(v, real)) for k, v in per_sample.items()}

    def _step(self, family: Family, state, rows, count, loss_index, activations, x, y):
        """One training step of a member on the samples ``rows``, the first ``count`` of them
        its batch's (the rest, a padded last batch's padding, weigh nothing)."""
        trainable, non_trainable, opt_vars = state
        xb, yb = x[rows], y[rows]
        real = jnp.arange(rows.shape[0]) < count
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            p, non_trainable_after, penalties = family.net.stateless_call(
                trainable, non_trainable, xb, training=True, return_losses=True
            )
            # As Keras's fit: the batch's mean loss with the kernels' penalties (model.l2).
            per_sample = _only(self._loss(family, loss_index, yb, p), real)
            loss = jnp.sum(per_sample) / count + sum(penalties)
            return loss * scale, (loss, p, non_trainable_after)

        with family.choosing(activations):
            grads, (loss, p, non_trainable_after) = jax.grad(objective, has_aux=True)(trainable)
        trainable_after, opt_after = family.apply(opt_vars, grads, trainable)
        sums = self._sums(family, loss_index, yb, p, real)
        sums["loss"] = loss * count  # the batch mean, weighted as Keras's fit does
        return (trainable_after, non_trainable_after, opt_after), sums

    def _evaluate(self, family: Family, state, loss_index, activations, x, y):
        trainable, non_trainable, _ = state
        total = None
        for start in range(0, x.shape[0], CHUNK):
            with family.choosing(activations):
                p, _ = family.net.stateless_call(
                    trainable, non_trainable, x[start : start + CHUNK], training=False
                )
            sums = self._sums(family, loss_index, y[start : start + CHUNK], p)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        return total

    def _diagnose(self, family: Family, state, loss_index, activations, x, y):
        """Every diagnostic of every hidden layer; each member keeps those of its own
        activations (:func:`runner.engine.handover.own_diagnostics`)."""
        trainable, non_trainable, opt_vars = state
        scale = self._scale(family, opt_vars)

        def objective(trainable):
            outputs, _ = family.tap.stateless_call(trainable, non_trainable, x, training=False)
            loss = jnp.mean(self._loss(family, loss_index, y, outputs[-1]))
            return loss * scale, outputs

        with family.choosing(activations):
            grads, outputs = jax.grad(objective, has_aux=True)(trainable)
            logs = {}
            for i, (kernel, layer) in enumerate(zip(family.kernels, family.choices, strict=True)):
                gradient = grads[kernel].astype("f4") / scale
                logs[f"grad_norm/hidden_{i}"] = jnp.sqrt(jnp.sum(jnp.square(gradient)))
                logs[f"median_activation/hidden_{i}"] = _median_activation(outputs[i])
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
        names = [*scored, *(f"val_{name}" for name in scored), "learning_rate"]
        if self.probe:
            for i in range(len(family.choices)):
                names += [f"{kind}/hidden_{i}" for kind in DIAGNOSTICS]
        return names

    def _epoch(self, states, batches, counts, rest, alive, losses, activations, data):
        """One epoch of every family: ``batches`` are each family's ``[steps, M, batch]``
        sample indices, of which the first ``counts`` of each step are its batch's (a padded
        last batch has fewer), ``rest`` its ``[M, r]`` last partial batch where the program
        does not pad it (r may be 0), ``alive`` its members still training, ``losses`` its
        members' losses, ``activations`` its hidden layers'. Each family's logs come back
        as one ``[names, M]`` array."""

        def steps(carry, batch):
            states, sums = carry
            rows, count = batch
            out_states, out_sums = [], []
            for f, family in enumerate(self.families):
                axes = (0, 0, None, 0, _own(family), None, None)
                step = jax.vmap(partial(self._step, family), in_axes=axes)
                state, step_sums = step(
                    states[f],
                    rows[f],
                    count,
                    losses[f],
                    activations[f],
                    data["x"]["train"],
                    data["y"][f]["train"],
                )
                out_states.append(state)
                out_sums.append(jax.tree.map(jnp.add, sums[f], step_sums))
            return (out_states, out_sums), None

        zeros = [
            {name: jnp.zeros(len(losses[f])) for name in self.log_names(family, "test")}
            for f, family in enumerate(self.families)
        ]
        (trained, sums), _ = jax.lax.scan(steps, (list(states), zeros), (batches, counts))
        if rest[0].shape[1]:
            (trained, sums), _ = steps((trained, sums), (rest, rest[0].shape[1]))
        # A frozen (diverged or stopped) member keeps its state: every member trains the
        # whole epoch, and a frozen one's training is dropped here, once, rather than at each
        # step (each of its arrays a select of its own, compiled and run every step).
        states = [
            jax.tree.map(partial(pick, living), after, before)
            for living, after, before in zip(alive, trained, states, strict=True)
        ]
        logs = []
        for f, family in enumerate(self.families):
            x, y = data["x"], data["y"][f]
            family_logs = {name: value / self.samples for name, value in sums[f].items()}
            evaluate = jax.vmap(
                partial(self._evaluate, family), in_axes=(0, 0, _own(family), None, None)
            )
            val = evaluate(states[f], losses[f], activations[f], x["val"], y["val"])
            family_logs.update({f"val_{k}": v / x["val"].shape[0] for k, v in val.items()})
            family_logs["learning_rate"] = jax.vmap(family.rate)(states[f][2])
            if self.probe:
                diagnose = jax.vmap(
                    partial(self._diagnose, family), in_axes=(0, 0, _own(family), None, None)
                )
                probe = (x["train"][: self.probe], y["train"][: self.probe])
                family_logs.update(diagnose(states[f], losses[f], activations[f], *probe))
            logs.append(jnp.stack([family_logs[name] for name in self.log_names(family)]))
        return states, logs

    def _test(self, states, losses, activations, data):
        logs = []
        for f, family in enumerate(self.families):
            x, y = data["x"]["test"], data["y"][f]["test"]
            evaluate = jax.vmap(
                partial(self._evaluate, family), in_axes=(0, 0, _own(family), None, None)
            )
            test = evaluate(states[f], losses[f], activations[f], x, y)
            logs.append(
                jnp.stack([test[name] / x.shape[0] for name in self.log_names(family, "test")])
            )
        return logs
