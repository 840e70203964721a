"""Training on JAX: each job's own Keras model, trained the way Keras documents for JAX
(``model.stateless_call``, ``optimizer.stateless_apply`` and ``jax.grad``), one compiled
program an epoch.

The models of a batch fall into *families*: the same layers, activations and output head,
so the same function, fed targets of the same encoding (in a short sweep, dense families that
differ only in their common activations are one, each member choosing its own when the
program runs: ``families.MIXED_WORK``). A family's models (on the CPU, each cohort of at
most ``CPU_WIDEST`` of them) are one function ``jax.vmap``-ed over their stacked weights
and optimizer states, learning rate included (a Keras optimizer variable like any other),
each member scoring its predictions with its own loss; every family of the batch steps
inside one ``lax.scan`` over the epoch's batches (the last partial one padded to a full
one whose padding weighs nothing: ``program.pads``), then validates and takes its
diagnostics, all in one ``jax.jit`` program. Each model keeps
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

Here: the training loop, one named step each. ``families.py``: which members one function
serves, and the activations and losses a program may switch between; ``program.py``: the
compiled epoch and test programs, and the traced programs kept on disk; ``handover.py``:
each member's logs as the epochs hand them over.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from runner import stop
from runner.data import Dataset, encode_targets
from runner.engine import (
    CHUNK,
    KEPT_EPOCHS,
    Member,
    OnEpoch,
    Settings,
    TrainResult,
    batch_orders,
)
from runner.engine.families import Cohort, Family, cohorts, fitting
from runner.engine.handover import Handover, log_epoch, progress
from runner.engine.program import Program, pick

log = logging.getLogger("runner.engine")

# What a batch of models may take on the CPU, where nothing reports free memory, and the
# share of a GPU's memory it may take.
CPU_BUDGET = 2 << 30
GPU_SHARE = 0.5
# On the CPU, a family vmapped over more members than this trained each of them about a
# quarter slower (bench/README.md, "A fused group's epoch against its floor"): a larger
# family trains as several cohorts of this many in one program. A GPU takes it whole.
CPU_WIDEST = 128


def bytes_per_model(member: Member, settings: Settings, dataset: Dataset) -> int:
    """About what one model takes in a batch: its weights four times over (weights,
    gradients and two optimizer slots) twice (before and after a step), its weights and
    optimizer slots once more as they were when the epoch began (kept to hold a frozen
    member's, :func:`runner.engine.program.pick`), and its layers' outputs for a
    training batch, an evaluation chunk (of the validation or test split, no more rows than
    the larger has) and the probe."""
    weights = sum(int(np.prod(v.shape)) for v in member.net.trainable_variables)
    widths = sum(int(np.prod(layer.output.shape[1:])) for layer in member.net.layers[1:])
    chunk = min(CHUNK, max(len(dataset.x_val), len(dataset.x_test)))
    batch = min(settings.batch_size, len(dataset.x_train))
    rows = batch * 3 + chunk + (settings.probe_size or 0) * 2
    return 4 * (11 * weights + rows * widths)


def budget() -> int:
    """The bytes a batch of models may take: a share of the GPU's memory, or a fixed
    budget on the CPU."""
    device = jax.devices()[0]
    if device.platform == "gpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] * GPU_SHARE)
    return CPU_BUDGET


def train_batches(
    members: list[Member],
    dataset: Dataset,
    settings: Settings,
    on_epoch: OnEpoch | None = None,
    programs: dict | None = None,
) -> list[TrainResult]:
    """Train ``members`` in as few batches as memory allows; return one result each.
    ``programs``: the compiled programs kept between trainings, by what they were traced
    for (a batch reuses one, or adds its own)."""
    # Members padded to their program's size fit too.
    per_batch = fitting(budget() // bytes_per_model(members[0], settings, dataset))
    if per_batch < len(members):
        log.info(
            "%d models exceed the memory budget of one program: training them in %d batches",
            len(members),
            math.ceil(len(members) / per_batch),
        )
    programs = {} if programs is None else programs
    results: list[TrainResult] = []
    for start in range(0, len(members), per_batch):
        batch = members[start : start + per_batch]
        handing = on_epoch and (
            lambda m, epoch, logs, start=start: on_epoch(start + m, epoch, logs)
        )
        results += _train_batch(batch, dataset, settings, handing, programs)
    return results


def _train_batch(
    members: list[Member],
    dataset: Dataset,
    settings: Settings,
    on_epoch: OnEpoch | None,
    programs: dict,
) -> list[TrainResult]:
    """Train one batch: its program, its data and states on the device once, an epoch a
    call, then the test split; each member's results are its own."""
    cpu = jax.devices()[0].platform == "cpu"
    found = cohorts(members, settings.switching, CPU_WIDEST if cpu else None, settings.epochs)
    program = _program(found, members, dataset, settings, programs)
    inputs = _upload(program, found, members, dataset)
    batch = Handover(members, found, program)
    samples = len(dataset.x_train)
    orders = [batch_orders(samples, m.seed) for m in members]
    clock = _Clock()
    # The members that restore their best weights keep them here, on the device.
    best = jax.tree.map(jnp.copy, inputs.states) if batch.restoring else None
    with progress(len(members), settings.epochs) as bar:
        for epoch in range(settings.epochs):
            # A signal whose KeyboardInterrupt was lost (raised inside a finalizer, such as
            # JAX's garbage-collection callback) stops the training here, after the last
            # epoch it has logged.
            stop.raise_if_signalled()
            order = np.stack([next(o) for o in orders])
            rows = _epoch_rows(order, found, program.batch_size, program.pads)
            inputs.states, logs = program.epoch(
                inputs.states, *rows, batch.living(), *inputs.fixed(), inputs.data
            )
            logs = jax.device_get(logs)
            clock.tick()
            batch.hand_over(epoch, logs, on_epoch)
            if best is not None and batch.improved.any():
                best = _select(best, inputs.states, batch.improved_slots())
            if bar.disable:
                log_epoch(epoch, settings.epochs, batch.results, batch.alive)
            bar.set_postfix_str(f"{batch.alive.sum()} training", refresh=False)
            bar.update()
            if not batch.alive.any():
                break
    states = inputs.states
    if best is not None:
        states = _select(states, best, batch.restored_slots())
    test = jax.device_get(program.test(states, *inputs.fixed(), inputs.data))
    seconds = _training_seconds(clock, len(members))
    _write_back(found, members, states)
    batch.set_test(test, seconds / len(members))
    return batch.results


@partial(jax.jit, donate_argnums=0)
def _select(base: list, chosen: list, masks: list) -> list:
    """Each cohort's states: a slot's from ``chosen`` where its mask is set, else from
    ``base`` (whose buffers are reused)."""
    return [
        jax.tree.map(partial(pick, mask), new, kept)
        for kept, new, mask in zip(base, chosen, masks, strict=True)
    ]


def _program(
    found: list[Cohort], members: list[Member], dataset: Dataset, settings: Settings, programs: dict
) -> Program:
    """The batch's program: one kept in ``programs`` for the same cohorts, settings and
    data shapes, or a new one traced for them and kept there."""
    key = (
        tuple(cohort.key(members) for cohort in found),
        settings.optimizer,
        settings.batch_size,
        settings.probe_size,
        dataset.task.value,
        dataset.classes,
        dataset.x_train.shape,
        dataset.x_val.shape,
        dataset.x_test.shape,
    )
    if key not in programs:
        steps = math.ceil(len(dataset.x_train) / settings.batch_size)
        families = [Family.of(cohort, members, settings, steps) for cohort in found]
        programs[key] = Program(families, dataset.task, settings, len(dataset.x_train), key)
    return programs[key]


@dataclass
class _Inputs:
    """What a batch's program takes, on the device: the data (each cohort's targets in its
    encoding), the cohorts' weights and optimizer states, and each cohort's loss and
    activation indices."""

    data: dict
    states: list
    losses: list
    activations: list

    def fixed(self) -> tuple[list, list]:
        return self.losses, self.activations


def _upload(
    program: Program, found: list[Cohort], members: list[Member], dataset: Dataset
) -> _Inputs:
    """The batch's inputs, each put on the device once."""
    splits = {
        "train": (dataset.x_train, dataset.y_train),
        "val": (dataset.x_val, dataset.y_val),
        "test": (dataset.x_test, dataset.y_test),
    }
    data = {
        "x": {split: x for split, (x, _) in splits.items()},
        "y": [
            {
                split: encode_targets(y, cohort.encoding, dataset.classes)
                for split, (_, y) in splits.items()
            }
            for cohort in found
        ],
    }
    states = [_state(f, c, members) for f, c in zip(program.families, found, strict=True)]
    return _Inputs(
        data=_on_device(data),
        states=states,
        losses=_on_device([cohort.loss_indices(members) for cohort in found]),
        activations=_on_device([cohort.activation_indices(members) for cohort in found]),
    )


def _on_device(tree):
    """``tree`` on the device, committed to it: as the states an epoch gives back are, so
    that the second epoch's arguments are placed as the first's were and its program is
    not compiled a second time."""
    return jax.device_put(tree, jax.devices()[0])


def _state(family: Family, cohort: Cohort, members: list[Member]) -> tuple:
    """The cohort's weights and optimizer state, stacked member by member in numpy (one
    transfer to the device, no small programs to compile); the optimizer's learning rate
    (a variable like any other) holds each member's own."""
    own = [members[p] for p in cohort.slots]
    initial = [_initial(m) for m in own]

    def stacked(which: int) -> list[np.ndarray]:
        return [np.stack(each) for each in zip(*(v[which] for v in initial), strict=True)]

    trainable, non_trainable = stacked(0), stacked(1)
    rate = family.optimizer.learning_rate
    opt_vars = []
    for v in family.optimizer.variables:
        if v is rate:
            opt_vars.append(np.asarray([m.learning_rate for m in own], v.dtype))
        else:
            opt_vars.append(np.repeat(np.asarray(v.value)[None], len(own), axis=0))
    return _on_device((trainable, non_trainable, opt_vars))


def _initial(member: Member) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The member's initial trainable and non-trainable values: its own (a fused group's
    member that shares its model), or its model's."""
    if member.initial is not None:
        return member.initial
    net = member.net
    return (
        [np.asarray(v.value) for v in net.trainable_variables],
        [np.asarray(v.value) for v in net.non_trainable_variables],
    )


def _epoch_rows(
    order: np.ndarray, found: list[Cohort], size: int, pads: bool
) -> tuple[list, np.ndarray, list]:
    """Each cohort's sample indices for one epoch, from every member's ``order``: its
    batches as ``[steps, M, size]``, the samples each step takes of them, and its last
    partial batch as ``[M, r]``. With ``pads``, a last partial batch is the last step,
    padded with the epoch's first samples (r is 0)."""
    full = order.shape[1] // size * size
    rest = order.shape[1] - full
    counts = [size] * (full // size)
    if pads and rest:
        order = np.concatenate([order, order[:, : size - rest]], axis=1)
        full, counts = full + size, [*counts, rest]
    batches, rests = [], []
    for cohort in found:
        rows = order[list(cohort.slots)]
        count = len(cohort.slots)
        batches.append(rows[:, :full].reshape(count, -1, size).transpose(1, 0, 2))
        rests.append(rows[:, full:])
    return batches, np.asarray(counts, np.int32), rests


class _Clock:
    """When a batch's epochs ended: the first, the last, and how long the most recent ones
    took (as many as a result keeps epochs, for their median in flat memory)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last = self.start
        self.took: deque[float] = deque(maxlen=KEPT_EPOCHS)

    def tick(self) -> None:
        """An epoch ended now."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.took.append(now - self.last)
        self.last = now


def _training_seconds(clock: _Clock, models: int) -> float:
    """The seconds the epochs took, less what compiling added to the first (counted as a
    median one), so that compiling shows as overhead, not as training. The models trained
    together: each is charged an equal share (as on TensorFlow, the test split's
    evaluation is not training)."""
    seconds = clock.last - clock.start
    if clock.took:
        epoch = float(np.median(clock.took))
        compiling = max(0.0, clock.first - clock.start - epoch)
        seconds -= compiling
        log.info(
            "trained %d model(s) on %s: %.2f s compiling, then %.2f ms an epoch",
            models,
            jax.devices()[0].platform,
            compiling,
            1000 * epoch,
        )
    return seconds


def _write_back(found: list[Cohort], members: list[Member], states: list) -> None:
    """Set the trained weights of each member that keeps them into its own Keras model;
    the others' stay on the device, where they are freed with the batch."""
    for cohort, state in zip(found, states, strict=True):
        kept = [(i, members[m]) for i, m in enumerate(cohort.positions) if members[m].keep_weights]
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
