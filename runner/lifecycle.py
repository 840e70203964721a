"""A job's life, the same under every launcher, and every way it can end.

1. **Plan** (:func:`plan`): check the job's values, pick its backend, load its data and
   open its store (:func:`runner.job.prepare`). A refused job has no run: a single run
   prints the message and exits 2; a sweep files it as a FAILED run carrying the error
   (:func:`runner.job.record_failure`) and goes on.
2. **Skip** (:func:`train`): with ``resume=true``, a job that finished before gives its
   earlier run's metrics, and that run joins this sweep.
3. **Train and record** (:func:`train`): :func:`runner.job.execute` trains one job, or a
   fused group, each in its own MLflow run. :meth:`runner.tracking.Run.recording` ends
   each run on every path; it is the one place where an exception becomes a run's
   status and outcome.
4. **After the run** (:func:`train`), the process:

   - Ctrl-C or SIGTERM: ends the sweep's parent KILLED too, says so in one line, exits
     130 (:func:`interrupted`); a signal outside any job is :func:`stopped`;
   - a store that did not take everything (:class:`runner.tracking.Unrecorded`): a
     single run exits 1, a sweep goes on;
   - any other error: a single run raises it (Hydra prints it, exit 1), a sweep logs it
     and goes on to its next job.

5. **Result** (:func:`result`): what the launcher gets back: the job's metrics, or with
   ``objective`` set, that metric alone for a search.

The basic launcher, and those that run jobs in workers of their own, run :func:`run` for
each job. The fused launcher plans each job in its own Hydra context with :func:`plan`,
then trains each group with :func:`train`.

Keras, and with it the job's backend, is imported only once a job's values have passed
:func:`~runner.checks.validate_values`, so a bad value is reported at once.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from runner import stop
from runner import sweep as sweeps
from runner.checks import validate_values
from runner.config import UserError
from runner.sweep import Sweep

if TYPE_CHECKING:
    from runner.job import Plan

log = logging.getLogger("runner")

Metrics = dict[str, float]


def run(cfg: DictConfig) -> Metrics | float | None:
    """One job, run in its own Hydra context, from plan to result."""
    hydra_cfg = HydraConfig.get()
    sweep = sweeps.sweep_of(hydra_cfg)
    if cfg.train.threads is None:
        with open_dict(cfg):
            cfg.train.threads = sweeps.threads_per_job(hydra_cfg)
    planned = None
    try:
        # A sweep has its parent run to end; a single run has nothing to end until it is
        # planned, and a signal while it imports Keras or loads the data simply exits.
        if sweep is not None:
            stop.install()
        planned = plan(cfg, sweep)
        stop.install()
        metrics = None if planned is None else train([planned])[0]
    except KeyboardInterrupt:
        interrupted(cfg, sweep, opened=planned is not None and planned.opened)
    if sweeps.in_worker(sweep):
        stop.install_between_jobs()
    return result(cfg, metrics)


def plan(cfg: DictConfig, sweep: Sweep | None) -> Plan | None:
    """The checked job; None when a sweep's job was refused, which is then recorded as a
    FAILED run. A single run's user error exits 2 with its message."""
    try:
        validate_values(cfg)
        from runner import backend

        backend.use(cfg.backend.value, cfg.device.value, cfg.train.threads)
        from runner import job

        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        return job.prepare(cfg, sweep, list(overrides))
    except Exception as error:
        # An error raised while a signal's KeyboardInterrupt unwound an import is that signal.
        stop.raise_if_signalled()
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


def train(plans: Sequence[Plan], group: str | None = None) -> list[Metrics | None]:
    """Train the planned jobs, one alone or a fused ``group`` of them, skipping those that
    finished before; return each job's metrics, None for one whose training failed. Every
    failure after the runs exist is handled here (see the module's docstring)."""
    from runner import job
    from runner.tracking import Unrecorded

    metrics: list[Metrics | None] = [
        job.skip(each) if each.finished is not None else None for each in plans
    ]
    todo = [index for index, each in enumerate(plans) if each.finished is None]
    if not todo:
        return metrics
    first = plans[todo[0]]
    alone = len(todo) == 1
    try:
        trained = job.execute([plans[index] for index in todo], None if alone else group)
    except KeyboardInterrupt:
        interrupted(first.cfg, first.sweep, opened=any(each.opened for each in plans))
    except Unrecorded:
        # The runs have said what they could not record and where it is kept.
        if first.sweep is None:
            sys.exit(1)
        return metrics
    except Exception:
        stop.raise_if_signalled()
        if first.sweep is None:
            raise
        if alone:
            log.exception("%s failed; its run is FAILED and the sweep goes on", first.label)
        else:
            log.exception("fused group %s failed; its runs are FAILED and the sweep goes on", group)
        return metrics
    for index, value in zip(todo, trained, strict=True):
        metrics[index] = value
    return metrics


def result(cfg: DictConfig, metrics: Metrics | None) -> Metrics | float:
    """What a job hands back to Hydra: its metrics, or with ``objective`` set, that metric
    alone for a search to optimise."""
    return metrics if cfg.objective is None else objective_value(cfg.objective.value, metrics)


def objective_value(name: str, metrics: Metrics | None) -> float:
    """The job's metric ``name``, for a search to optimise. A job that diverged or failed
    gets the worst value there is (inf for a loss or an error, -inf for an accuracy): the
    search learns to avoid its config and goes on. (Optuna would drop a NaN as a failed
    trial, and stop with an error at the end when every trial had failed.) An objective
    that the job does not log was refused before it trained (:func:`job.prepare`)."""
    from runner.metrics import lower_is_better

    if not metrics:
        return math.inf if lower_is_better(name) else -math.inf
    return metrics[name]


def interrupted(cfg: DictConfig, sweep: Sweep | None, opened: bool = True) -> NoReturn:
    """After Ctrl-C or SIGTERM (the job's own run is ended KILLED already, when ``opened``):
    end the sweep's parent runs KILLED too, say in one line what was kept, and exit 130. A
    worker of a sweep leaves that to the sweep's process, which stops every worker."""
    from runner.tracking import INTERRUPTED, open_tracker

    if sweeps.in_worker(sweep):
        if sweeps.in_ray_task():
            # Ray cancelled the job (runner.patches), gives this worker no further job of the
            # sweep, and reports a worker that exits as a crash: the task ends by this.
            raise KeyboardInterrupt(stop.requested)
        stop.leave()
    stop.end_workers()
    if not cfg.tracking.enabled:
        log.error("interrupted (tracking.enabled=false: nothing was recorded)")
    elif sweep is None and not opened:
        log.error("interrupted before the run was created: nothing was recorded")
    elif sweep is None:
        log.error("interrupted: the run ended KILLED with the metrics logged so far")
    else:
        open_tracker(cfg.tracking).end_sweep(sweep.id, INTERRUPTED)
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
