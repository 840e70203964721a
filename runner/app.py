"""The steps of a job that every launcher shares: planning a job, which refuses bad input
before a run exists, and stopping a sweep after Ctrl-C or SIGTERM.

Keras, and with it the job's backend, is imported only once a job's values have passed
:func:`validate_values`, so a bad value is reported at once.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import TYPE_CHECKING, NoReturn

from omegaconf import DictConfig

from runner import stop
from runner import sweep as sweeps
from runner.checks import validate_values
from runner.config import UserError
from runner.sweep import Sweep

if TYPE_CHECKING:
    from runner.job import Plan

log = logging.getLogger("runner")


def plan_job(cfg: DictConfig, sweep: Sweep | None) -> Plan | None:
    """The checked job; None when a sweep's job was refused, which is then recorded as a
    FAILED run. A single run's user error exits 2 with its message."""
    try:
        validate_values(cfg)
        from runner import backend

        backend.use(cfg.backend.value, cfg.device.value, cfg.train.threads)
        from runner import job

        return job.prepare(cfg, sweep)
    except Exception as error:
        # An error raised while a signal's KeyboardInterrupt unwound an import is that signal.
        stop.check()
        if sweep is None:
            if not isinstance(error, UserError):
                raise
            log.error("%s", error)
            sys.exit(2)
        from runner import job

        user_error = isinstance(error, UserError)
        log.error("%s refused: %s", job.label(cfg), error, exc_info=not user_error)
        job.record_failure(cfg, sweep, error)
        return None


def job_result(cfg: DictConfig, metrics: dict[str, float] | None) -> dict[str, float] | float:
    """What a job hands back to Hydra: its metrics, or with ``objective`` set, that metric
    alone for a search to optimise."""
    return metrics if cfg.objective is None else objective_value(cfg.objective.value, metrics)


def objective_value(name: str, metrics: dict[str, float] | None) -> float:
    """The job's metric ``name``, for a search to optimise. A job that diverged or failed
    gets the worst value there is (inf for a loss or an error, -inf for an accuracy): the
    search learns to avoid its config and goes on. (Optuna would drop a NaN as a failed
    trial, and stop with an error at the end when every trial had failed.) An objective
    that the job does not log was refused before it trained (:func:`job.prepare`)."""
    from runner.metrics import lower_is_better

    if not metrics:
        return math.inf if lower_is_better(name) else -math.inf
    return metrics[name]


def interrupted(cfg: DictConfig, sweep: Sweep | None) -> NoReturn:
    """After Ctrl-C or SIGTERM (the job's own run is ended KILLED already): end the sweep's
    parent runs KILLED too, say in one line what was kept, and exit 130. A worker of a sweep
    leaves that to the sweep's process, which stops every worker."""
    from runner.tracking import INTERRUPTED, Tracker, tracking_uri

    if sweeps.in_worker(sweep):
        if sweeps.in_ray_task():
            # Ray cancelled the job (runner.patches), gives this worker no further job of the
            # sweep, and reports a worker that exits as a crash: the task ends by this.
            raise KeyboardInterrupt(stop.requested)
        stop.leave()
    stop.end_workers()
    if not cfg.tracking.enabled:
        log.error("interrupted (tracking.enabled=false: nothing was recorded)")
    elif sweep is None:
        log.error("interrupted: the run ended KILLED with the metrics logged so far")
    else:
        tracker = Tracker(tracking_uri(cfg.tracking.uri), cfg.tracking.adopt_foreign_db)
        tracker.end_sweep(sweep.id, INTERRUPTED)
        log.error(
            "interrupted: sweep %s stopped; its finished jobs are kept. Re-run the same "
            "command with resume=true to run only the missing ones.",
            sweep.name,
        )
    sys.exit(130)


def stopped() -> NoReturn:
    """After Ctrl-C or SIGTERM outside a job, in Hydra's own work around the jobs (a
    launcher composing or starting them): end the sweep under way as :func:`interrupted`
    does, once its parent run exists; otherwise no run of this process is open."""
    if sweeps.started is not None:
        interrupted(sweeps.started, sweeps.sweep_of(sweeps.started.hydra))
    stop.end_workers()
    log.error("interrupted: no run of this process is left RUNNING")
    sys.exit(130)
