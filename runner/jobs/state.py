"""What a process keeps between the jobs it runs, in one object: :data:`STATE`.

A sweep's jobs run one after another in one process (the basic and fused launchers), or a
few in each worker process (joblib, submitit, Ray). What one job leaves for the next is
here, and nowhere else: the backend it was set up with, the last dataset loaded, the
stores opened and those whose orphans were ended, whether the objects of the frameworks
are frozen out of garbage collection, the compiled programs and the figures kept, the
damaged entries of JAX's cache it has named, and, in the process that runs a sweep, that
it does and which. Tests start from a fresh one where they need to (tests/conftest.py).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner import data
from runner.config import DatasetConfig

if TYPE_CHECKING:
    from runner.jobs.spec import TrackingSpec
    from runner.sweep import Sweep
    from runner.tracking import AnyTracker

log = logging.getLogger("runner")


@dataclass
class StartedSweep:
    """The sweep this process runs, from the moment its parent run exists until the parent
    has ended: a signal outside a job (while the launcher composes or starts the jobs) ends
    it from here (:func:`runner.jobs.outcome.stopped`)."""

    sweep: Sweep
    tracking: TrackingSpec


@dataclass
class ProcessState:
    """See the module's docstring. ``compute``: the backend, device and threads this
    process was set up with (:func:`runner.backend.use`). ``sweep_owner``: the id of the
    process that runs the sweep (its callback, its launcher); jobs that a launcher runs in
    that process see it, those in workers of their own do not, and leave the stopping of
    the sweep to it."""

    compute: dict = field(default_factory=dict)
    datasets: dict[str, data.Dataset] = field(default_factory=dict)
    trackers: dict[str, AnyTracker] = field(default_factory=dict)
    reaped: set[str] = field(default_factory=set)
    programs: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    damaged_cache: set[str] = field(default_factory=set)
    gc_frozen: bool = False
    sweep_owner: int | None = None
    started: StartedSweep | None = None

    def dataset(self, config: DatasetConfig) -> data.Dataset:
        """:func:`runner.data.load`, reusing the last result for an equal dataset config.
        The arrays are shared, so nothing may write to them; everything downstream makes
        its own copies."""
        key = json.dumps(vars(config), sort_keys=True, default=str)
        if key not in self.datasets:
            self.datasets.clear()
            self.datasets[key] = data.load(config)
        return self.datasets[key]

    def end_orphans_once(self, tracker: AnyTracker) -> None:
        """Once per store and process: end the runs a killed process left RUNNING, in one
        line."""
        if tracker.uri in self.reaped:
            return
        self.reaped.add(tracker.uri)
        names = tracker.reap_orphans()
        if names:
            log.warning(
                "marked %d run(s) left RUNNING by a process that is gone as KILLED "
                "(outcome=interrupted): %s",
                len(names),
                ", ".join(names),
            )

    def freeze_once(self) -> None:
        """Freeze the objects alive before the first job (the frameworks' and MLflow's
        modules, hundreds of thousands of them) out of garbage collection, once: Keras's
        ``clear_session`` between jobs collects in full, which is then cheap."""
        if not self.gc_frozen:
            gc.freeze()
            self.gc_frozen = True

    def in_worker(self, sweep: Sweep | None) -> bool:
        """Whether this process runs a job of ``sweep`` for the launcher of another process."""
        return sweep is not None and self.sweep_owner != os.getpid()


STATE = ProcessState()


def reset() -> None:
    """Start again from a fresh state, as a new process would (tests)."""
    vars(STATE).update(vars(ProcessState()))
