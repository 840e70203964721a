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
(``lax.switch``) among the common ones: the sweep's next jobs in the same process, with
other activations or losses, reuse it instead of tracing and compiling their own. Branches
cost tracing and compiling once, so a single run and a fused batch (one program for the
whole batch) keep theirs compiled in.

Here: the training loop. ``families.py``: which members one function serves, and the
activations and losses a program may switch between; ``program.py``: the compiled epoch and
test programs, and the traced programs kept on disk.
"""

from __future__ import annotations

import logging
import math
import time

import jax
import numpy as np
from tqdm import tqdm

from runner import stop
from runner.data import Dataset, encode_targets
from runner.engine import (
    CHUNK,
    Member,
    OnEpoch,
    Settings,
    TrainResult,
    batch_orders,
    epoch_line,
)
from runner.engine.families import Family, Group, dense_layers, groups
from runner.engine.program import Program
from runner.metrics import diagnostic_names

log = logging.getLogger(__name__)

# What a batch of models may take on the CPU, where nothing reports free memory, and the
# share of a GPU's memory it may take.
CPU_BUDGET = 2 << 30
GPU_SHARE = 0.5


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
    widths = sum(layer.units for layer in dense_layers(member.net))
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
        stop.raise_if_signalled()
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
        # Every model hands over the same epochs: a signal waits until this epoch's logs
        # are all handed over, so that a stopped group's runs keep as many epochs each.
        with stop.held():
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
