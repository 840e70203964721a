"""What a batch of models hands over as it trains on JAX: each member's logs of each epoch
(:class:`Handover`), kept and passed on as Keras reports them, and the progress a terminal
or the log shows."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from runner import stop
from runner.engine import Member, OnEpoch, TrainResult, epoch_line
from runner.engine.families import Cohort
from runner.engine.program import Program
from runner.engine.stopping import Watch
from runner.metrics import diagnostic_names

log = logging.getLogger("runner.engine")


@dataclass
class Handover:
    """A batch's members while they train: who is still training (``alive``: a diverged
    member drops out, and so does one that early stopping stops), each one's results so
    far, the diagnostics each one logs, and whose weights of the latest epoch are its best
    so far (``improved``, for the members that restore their best)."""

    members: list[Member]
    found: list[Cohort]
    program: Program
    alive: np.ndarray = field(init=False)
    results: list[TrainResult] = field(init=False)

    def __post_init__(self) -> None:
        self.alive = np.ones(len(self.members), bool)
        self.results = [TrainResult() for _ in self.members]
        self.names = [self.program.log_names(f) for f in self.program.families]
        self.diagnostics = [own_diagnostics(m) for m in self.members]
        self.watches = [m.early_stopping and Watch(m.early_stopping) for m in self.members]
        self.improved = np.zeros(len(self.members), bool)

    @property
    def restoring(self) -> bool:
        """Whether a member ends with the weights of its best epoch."""
        return any(m.early_stopping and m.early_stopping.restore_best for m in self.members)

    def _slots(self, flags: np.ndarray) -> list[np.ndarray]:
        """Per-member ``flags`` as each cohort's slots, in its order (padding as its first
        member)."""
        return [flags[list(cohort.slots)] for cohort in self.found]

    def living(self) -> list[np.ndarray]:
        """Each cohort's slots still training."""
        return self._slots(self.alive)

    def improved_slots(self) -> list[np.ndarray]:
        """Each cohort's slots whose latest epoch's weights are their best so far."""
        return self._slots(self.improved)

    def restored_slots(self) -> list[np.ndarray]:
        """Each cohort's slots that end with their best epoch's weights: those that restore
        their best, have one, and did not diverge."""
        restored = np.array(
            [
                bool(m.early_stopping and m.early_stopping.restore_best)
                and r.best_epoch is not None
                and r.diverged_epoch is None
                for m, r in zip(self.members, self.results, strict=True)
            ]
        )
        return self._slots(restored)

    def hand_over(self, epoch: int, logs: list, on_epoch: OnEpoch | None) -> None:
        """Keep each living member's logs of ``epoch`` and hand them to ``on_epoch``; a
        member whose loss stopped being finite drops out. Every member hands over the same
        epochs: a signal waits until this epoch's logs are all handed over, so that a
        stopped group's runs keep as many epochs each."""
        self.improved[:] = False
        with stop.held():
            for cohort, names, rows in zip(self.found, self.names, logs, strict=True):
                columns = _columns(names, rows)
                for i, m in enumerate(cohort.positions):
                    if self.alive[m]:
                        values = self._keep(m, epoch, {k: c[i] for k, c in columns.items()})
                        if on_epoch is not None:
                            on_epoch(m, epoch, values)

    def _keep(self, m: int, epoch: int, values: dict[str, float]) -> dict[str, float]:
        """Add member ``m``'s values of ``epoch``, those of its own diagnostics, to its
        history, and return them."""
        values = {k: v for k, v in values.items() if "/" not in k or k in self.diagnostics[m]}
        result = self.results[m]
        result.add(epoch, values)
        if not math.isfinite(values["loss"]):
            result.diverged_epoch = epoch
            self.alive[m] = False
        elif self.watches[m]:
            self.improved[m], stops = self.watches[m].update(epoch, values)
            result.best_epoch = self.watches[m].best_epoch
            if stops:
                result.stopped_epoch = epoch
                self.alive[m] = False
        return values

    def set_test(self, test: list, share: float) -> None:
        """Each member's test metrics (none for one that diverged) and its ``share`` of the
        training time."""
        for family, cohort, rows in zip(self.program.families, self.found, test, strict=True):
            columns = _columns(self.program.log_names(family, "test"), rows)
            for i, m in enumerate(cohort.positions):
                result = self.results[m]
                result.train_seconds = share
                if result.diverged_epoch is None:
                    result.test = {f"test_{name}": column[i] for name, column in columns.items()}


@contextmanager
def progress(models: int, epochs: int) -> Iterator[tqdm]:
    """A batch of models shows its progress on a terminal (tqdm: epochs, models still
    training, elapsed and remaining time); elsewhere, and for a single job, each epoch is a
    log line."""
    progress = tqdm(
        total=epochs,
        desc=f"{models} models",
        unit="epoch",
        disable=True if models == 1 else None,
        leave=False,
    )
    try:
        yield progress
    finally:
        progress.close()


def own_diagnostics(member: Member) -> set[str]:
    """The diagnostics a member logs, those of its activations: its program computes every
    kind for every layer."""
    return {
        name
        for layer, activation in enumerate(member.activations)
        for name in diagnostic_names(layer, activation)
    }


def _columns(names: list[str], rows: np.ndarray) -> dict[str, list[float]]:
    """A family's ``[names, M]`` logs as one list of floats per name, as Keras reports
    them: ``rmse`` was carried as a mean square."""
    columns = {}
    for name, row in zip(names, rows, strict=True):
        if name.rsplit("_", 1)[-1] == "rmse":
            row = np.sqrt(row)
        columns[name] = row.tolist()
    return columns


def log_epoch(epoch: int, epochs: int, results: list[TrainResult], alive: np.ndarray) -> None:
    if len(results) == 1:
        log.info("%s", epoch_line(epoch, epochs, results[0].last))
        return
    val_losses = [r.last["val_loss"] for r, a in zip(results, alive, strict=True) if a]
    log.info(
        "epoch %d/%d  %d of %d models training%s",
        epoch + 1,
        epochs,
        alive.sum(),
        len(results),
        f"  val_loss {min(val_losses):.4g} to {max(val_losses):.4g}" if val_losses else "",
    )
