"""The Hydra callback that groups a sweep's jobs under one MLflow parent run.

At the start it refuses what the sweep's launcher cannot do, and creates the parent in the
sweep's experiment before any job runs, so that parallel workers find it instead of racing
to create it. At the end it prints the sweep's comparison table from the store, ends the
parent with the sweep's status, and makes the process exit non-zero when a job failed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner import stop
from runner.compat import launchers
from runner.config import UserError
from runner.jobs import outcome
from runner.jobs.spec import TrackingSpec, data_of
from runner.jobs.state import STATE, StartedSweep
from runner.sweep import (
    IN_PROCESS,
    PER_PROCESS,
    SWEEP_SIZE,
    Sweep,
    check_launch,
    launcher_name,
    overridden,
    sweep_of,
    sweep_size,
)
from runner.tracking import COMPLETED, FAILED, INTERRUPTED, open_tracker

log = logging.getLogger("runner")

# What reads, sums up and records the sweep's table at its end.
REPORT = "runner.compare:report_sweep"


def prepare_workers(launcher: str) -> None:
    """Let the workers of ``launcher`` end their jobs' runs on a signal before they are
    gone. Left to themselves, loky kills joblib's workers at once, submitit's local
    controllers kill their jobs a second after Ctrl-C, and Ray's shutdown kills its jobs:
    often before the run has ended."""
    if launcher == "JoblibLauncher":
        launchers.loky_workers_end_their_jobs_first()
    elif launcher == "LocalLauncher":
        launchers.submitit_local_jobs_take_ctrl_c()
    elif launcher == "RayLauncher":
        launchers.ray_jobs_cancelled_on_a_stop()


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        STATE.sweep_owner = os.getpid()
        prepare_workers(launcher_name(config))
        try:
            check_launch(config)
            if config.dataset.get("folds") is not None:
                # Loaded here, before the parent run exists, so that folds too many for
                # the data refuse the sweep; the jobs of this process reuse it.
                STATE.dataset(data_of(config))
        except UserError as error:
            log.error("%s", error)
            sys.exit(2)
        size = sweep_size(config)
        if size is None:
            os.environ.pop(SWEEP_SIZE, None)
        else:
            os.environ[SWEEP_SIZE] = str(size)
        sweep = sweep_of(config.hydra)
        tracking = TrackingSpec.from_cfg(config)
        if not tracking.enabled:
            log.warning(
                "tracking.enabled=false: nothing is recorded and no table is printed at the "
                "end; the metrics are in the jobs' logs only"
            )
            # No run to end, but the jobs' workers to stop on a signal (outcome.stopped).
            stop.install()
            return
        try:
            in_process = launcher_name(config) in IN_PROCESS
            tracker = open_tracker(tracking, STATE.trackers, apart=in_process)
            if in_process:
                set_up_backend(config)
            tracker.experiment(tracking.experiment)
            # From its parent run on, the sweep has a run to end on a signal; the signal is
            # held back until the parent is known to end it.
            stop.install()
            with stop.held():
                tracker.sweep_parent(tracking.experiment, sweep.id, sweep.name, claim=True)
                STATE.started = StartedSweep(sweep, tracking)
        except UserError as error:
            log.error("%s", error)
            sys.exit(2)
        except KeyboardInterrupt:
            outcome.stopped()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = TrackingSpec.from_cfg(config)
        if not tracking.enabled:
            return
        sweep = sweep_of(config.hydra)
        try:
            try:
                end(tracking, sweep)
            except Exception:
                # Hydra would print an error that a signal's KeyboardInterrupt turned into
                # as a warning, and go on: it is that signal.
                stop.raise_if_signalled()
                raise
        except KeyboardInterrupt:
            # Unless the parent has ended already, with the sweep's own status.
            if STATE.started is not None:
                tracker = open_tracker(tracking, STATE.trackers)
                tracker.wait()
                tracker.end_sweep(sweep.id, INTERRUPTED)
                log.error(
                    "interrupted at the end of sweep %s: every job had ended, and their runs "
                    "are kept; the parent run ended KILLED before it got the sweep's table. "
                    "`python -m runner.compare --sweep %s` prints the table.",
                    sweep.name,
                    sweep.name,
                )
            sys.exit(130)


def end(tracking: TrackingSpec, sweep: Sweep) -> None:
    """Print the sweep's table from the store, put it on the parent run, end the parent
    with the sweep's status, and exit 1 when a job failed."""
    try:
        tracker = open_tracker(tracking, STATE.trackers)
        # The runs its jobs ended, recorded beside the training that followed them.
        tracker.wait()
        # Read, summed up and drawn where the store is open, with pandas, SciPy and
        # matplotlib: in a tracking process, for a sweep whose jobs trained here.
        report = tracker.call(REPORT, tracker.uri, sweep.id, sweep.name)
    except UserError as error:
        log.error("%s The sweep's table and its parent run's status are not recorded.", error)
        sys.exit(1)
    failed = report.failed
    if not report.runs:
        log.warning("sweep %s recorded no runs", sweep.name)
    else:
        log.info("sweep %s: %d runs\n%s", sweep.name, report.runs, report.table)
    # A search (hparams_search=optuna) writes its best params here: the parent keeps them.
    best = Path(sweep.id) / "optimization_results.yaml"
    if best.exists():
        parent_id = tracker.sweep_parent(tracking.experiment, sweep.id, sweep.name)
        tracker.log_file(parent_id, best)
    if report.link:
        log.info("the sweep %s", report.link)
    tracker.end_sweep(sweep.id, FAILED if failed else COMPLETED)
    STATE.started = None
    if failed:
        log.error("%d of %d jobs failed; their runs carry the error", failed, report.runs)
        sys.exit(1)


def set_up_backend(config: DictConfig) -> None:
    """Set up the backend that every job of this process trains on, and import Keras, as
    its first job would, while the tracking process imports MLflow and opens the store on
    another core. Not when the sweep's overrides give the backend, the device or the threads
    (one value each, :func:`runner.sweep.check_launch`): each job sets them up from its own
    config then. A value the backend refuses is left for each job to refuse."""
    if overridden(config) & set(PER_PROCESS):
        return
    from runner import backend

    try:
        backend.use(config.backend.value, config.device.value, config.train.threads, STATE.compute)
    except UserError:
        return
    import keras  # noqa: F401
