"""Training: each job's own Keras model, trained by the engine of the process's backend.

- JAX (``runner/engine/jax_engine.py``): every batch of models, one or hundreds, trains as
  one compiled program per epoch; a single job is a batch of one.
- TensorFlow (``runner/engine/tf_engine.py``): Keras's ``compile`` and ``fit``, one model.

Both take the same :class:`Member` and :class:`Settings` and return one
:class:`TrainResult` per member; per-epoch logs leave through ``on_epoch``, so training
knows nothing of tracking. This module imports no Keras: a job's spec names an
:class:`OptimizerKind` before its backend is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.config import Encoding

if TYPE_CHECKING:
    from runner.data import Dataset
    from runner.model import ModelSpec

# Rows per forward pass when evaluating: bounds memory on the large image sets.
CHUNK = 4096

# on_epoch(member's position, epoch, logs)
OnEpoch = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class Schedule:
    """How the learning rate changes, by epochs: ``name`` (``constant``, ``cosine``,
    ``step``, ``exponential``, ``warmup_cosine``) and the arguments of Keras's schedule
    (runner/engine/common.py), counted in epochs."""

    name: str = "constant"
    decay_epochs: int = 1
    decay_rate: float = 0.1
    alpha: float = 0.0
    warmup_epochs: int = 0


@dataclass(frozen=True)
class OptimizerKind:
    """A Keras optimizer by identifier, its momentum (sgd and rmsprop) and its schedule;
    the learning rate the schedule starts from is each member's own. Then the keys each
    member of a fused group may have its own of (a family of its own): Keras's gradient
    clipping, Nesterov's momentum (sgd) and weight decay."""

    name: str
    momentum: float | None = None
    schedule: Schedule = Schedule()
    clipnorm: float | None = None
    clipvalue: float | None = None
    nesterov: bool = False
    weight_decay: float | None = None


@dataclass(frozen=True)
class EarlyStopping:
    """When a member stops training, as Keras's EarlyStopping decides it: once
    ``monitor`` (a validation metric) has not improved by more than ``min_delta`` for
    ``patience`` epochs; ``restore_best``: it ends with the weights of its best epoch."""

    monitor: str
    patience: int
    min_delta: float
    restore_best: bool


@dataclass(frozen=True)
class Member:
    """One model to train: its Keras model (with its initial weights) and the spec it was
    built from, its loss and the target encoding that loss needs, its learning rate, and
    its seed, which fixes the order of its training batches. ``keep_weights``: ``net``
    holds the trained weights once training ends (Keras's ``fit`` trains ``net`` itself;
    the JAX engine trains copies, and writes them back only for the members that ask).
    ``early_stopping``: when it stops before the last epoch (None: never). ``optimizer``:
    its own optimizer (None: the training's, :attr:`Settings.optimizer`). ``initial``: its
    initial trainable and non-trainable values, when ``net`` is a model of its spec that
    other members of a fused group share (JAX; None: ``net`` holds its own)."""

    net: Any
    model: ModelSpec
    loss: str
    encoding: Encoding
    learning_rate: float
    seed: int
    keep_weights: bool = False
    early_stopping: EarlyStopping | None = None
    optimizer: OptimizerKind | None = None
    initial: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    def optimizer_of(self, settings: Settings) -> OptimizerKind:
        """Its own optimizer, or the training's."""
        return self.optimizer or settings.optimizer

    @property
    def activations(self) -> tuple[str, ...]:
        """Its hidden layers' activations."""
        return self.model.activations


@dataclass(frozen=True)
class Settings:
    """What the members of one training share; ``probe_size`` None turns the diagnostics
    off. ``switching``: more jobs may follow in this process (a sweep's), so a single
    job's compiled program takes its activations and loss at run time, for them to reuse
    (JAX)."""

    optimizer: OptimizerKind
    epochs: int
    batch_size: int
    probe_size: int | None
    steps_per_execution: int = 1
    switching: bool = False


# The most epochs a result keeps of each metric's curve: memory stays flat however long a
# run trains (each epoch's values go to tracking as they come).
KEPT_EPOCHS = 1000


@dataclass
class TrainResult:
    """The per-epoch history (Keras's names) of the ``epochs`` kept (counted from 0), the
    ``last`` epoch's values, the test metrics (``test_`` + Keras's names), the seconds
    training took, the epoch whose loss stopped being finite, if one did, and with early
    stopping, the epoch it stopped at (None: it trained every epoch) and its best one.

    A run of up to :data:`KEPT_EPOCHS` epochs keeps every one; a longer one keeps every
    2nd, then every 4th... (``stride``), so that its curves keep their shape in bounded
    memory."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    diverged_epoch: int | None = None
    stopped_epoch: int | None = None
    best_epoch: int | None = None
    stride: int = 1

    def add(self, epoch: int, values: dict[str, float]) -> None:
        """Keep the ``values`` of ``epoch``, the next one; past :data:`KEPT_EPOCHS` kept,
        every other one kept is dropped and the stride doubles."""
        self.last = values
        if epoch % self.stride:
            return
        self.epochs.append(epoch)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        if len(self.epochs) > KEPT_EPOCHS:
            self.stride *= 2
            kept = [i for i, e in enumerate(self.epochs) if e % self.stride == 0]
            self.epochs = [self.epochs[i] for i in kept]
            self.history = {n: [v[i] for i in kept] for n, v in self.history.items()}


def batch_orders(samples: int, seed: int) -> Iterator[np.ndarray]:
    """The order in which the training samples are fed, a fresh permutation each epoch,
    drawn from ``seed`` one epoch at a time. Every engine draws it here, so a model sees the
    same batches alone or fused, on either backend."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.permutation(samples).astype(np.int32)


def epoch_line(epoch: int, epochs: int, values: dict[str, float]) -> str:
    """An epoch's console line, ``epoch 3/20  loss=0.41  accuracy=0.88 ...``; the
    per-layer diagnostics go to tracking only."""
    shown = "  ".join(f"{name}={value:.4g}" for name, value in values.items() if "/" not in name)
    return f"epoch {epoch + 1}/{epochs}  {shown}"


def train(
    members: list[Member],
    dataset: Dataset,
    settings: Settings,
    on_epoch: OnEpoch | None = None,
    programs: dict | None = None,
) -> list[TrainResult]:
    """Train ``members`` on ``dataset`` with the engine of Keras's backend. ``programs``:
    the compiled programs this process keeps between trainings (JAX), by what they were
    traced for; None keeps none."""
    import keras

    if keras.backend.backend() == "jax":
        from runner.engine import jax_engine

        return jax_engine.train_batches(members, dataset, settings, on_epoch, programs)
    from runner.engine import tf_engine

    return tf_engine.fit_each(members, dataset, settings, on_epoch)
