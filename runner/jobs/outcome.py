"""A job's life, the same under every launcher, and every way it can end.

1. **Plan** (:func:`planned`): check the job's values, pick its backend, load its data,
   resolve its spec and open its store (:func:`runner.jobs.plan.plan`). A refused job has
   no run: a single run prints the message and exits 2; a sweep files it as a FAILED run
   carrying the error (:func:`runner.jobs.record.file_refusal`) and goes on.
2. **Skip** (:func:`run_plans`): with ``resume=true``, a job that finished before gives its
   earlier run's metrics, and that run joins this sweep.
3. **Train and record** (:func:`run_plans`): :func:`runner.jobs.execute.execute` trains one
   job, or a fused group, each in its own MLflow run. :meth:`runner.tracking.Run.recording`
   ends each run on every path; it is the one place where an exception becomes a run's
   status and outcome.
4. **After the run** (:func:`run_plans`), the process:

   - Ctrl-C or SIGTERM: ends the sweep's parent KILLED too, says so in one line, exits
     130 (:func:`interrupted`); a signal outside any job is :func:`stopped`;
   - a store that did not take everything (:class:`runner.tracking.Unrecorded`): a
     single run exits 1, a sweep goes on;
   - any other error: a single run raises it (Hydra prints it, exit 1), a sweep logs it
     and goes on to its next job.

5. **Result** (:func:`result`): what the launcher gets back: the job's metrics, or with
   ``objective`` set, that metric alone for a search.

The basic launcher, and those that run jobs in workers of their own, run :func:`run` for
each job. The fused launcher plans each job in its own Hydra context with :func:`planned`,
then trains each group with :func:`run_plans`.

Keras and matplotlib are imported only once a job is planned (:mod:`runner.jobs.execute`,
:mod:`runner.jobs.record`): Keras takes its backend at import.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

from omegaconf import DictConfig

from runner import stop
from runner.config import UserError
from runner.jobs.plan import Plan, plan
from runner.jobs.spec import JobContext, JobRef, TrackingSpec
from runner.jobs.state import STATE
from runner.metrics import lower_is_better
from runner.sweep import Sweep, in_ray_task
from runner.tracking import INTERRUPTED, Unrecorded, open_tracker

log = logging.getLogger("runner")

Metrics = dict[str, float]


def run(cfg: DictConfig) -> Metrics | float | None:
    """One job, run in its own Hydra context, from plan to result."""
    context = JobContext.from_hydra()
    ref = JobRef.from_cfg(cfg, context)
    job = None
    metrics = None
    try:
        # A sweep has its parent run to end; a single run has nothing to end until it is
        # planned, and a signal while it imports Keras or loads the data simply exits.
        if ref.sweep is not None:
            stop.install()
        job = planned(cfg, context, ref)
        stop.install()
        if job is not None:
            metrics = run_plans([job])[0]
    except KeyboardInterrupt:
        interrupted(ref, opened=job is not None and job.opened)
    if STATE.in_worker(ref.sweep):
        stop.install_between_jobs()
    return result(ref, metrics)


def planned(cfg: DictConfig, context: JobContext, ref: JobRef) -> Plan | None:
    """The planned job ``cfg`` (named ``ref``) in ``context``; None when a sweep's job was
    refused, which is then recorded as a FAILED run. A single run's user error exits 2 with
    its message."""
    try:
        return plan(cfg, context)
    except Exception as error:
        # An error raised while a signal's KeyboardInterrupt unwound an import is that signal.
        stop.raise_if_signalled()
        user_error = isinstance(error, UserError)
        if ref.sweep is None:
            if not user_error:
                raise
            log.error("%s", error)
            sys.exit(2)
        from runner.jobs.record import file_refusal

        log.error("%s refused: %s", ref.label, error, exc_info=not user_error)
        file_refusal(ref, error)
        return None


def run_plans(plans: Sequence[Plan], group: str | None = None) -> list[Metrics | None]:
    """Run the planned jobs, one alone or a fused ``group`` of them, skipping those that
    finished before; return each job's metrics, None for one whose training failed. Every
    failure after the runs exist is handled here (see the module's docstring)."""
    from runner.jobs.execute import execute

    metrics: list[Metrics | None] = [
        skip(each) if each.finished is not None else None for each in plans
    ]
    todo = [index for index, each in enumerate(plans) if each.finished is None]
    if not todo:
        return metrics
    first = plans[todo[0]].spec
    alone = len(todo) == 1
    try:
        trained = execute([plans[index] for index in todo], None if alone else group)
    except KeyboardInterrupt:
        interrupted(first, opened=any(each.opened for each in plans))
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


def skip(job: Plan) -> Metrics:
    """Stand in for a job that finished before: move its run into this sweep and return
    its validation and test metrics."""
    run, sweep = job.finished, job.spec.sweep
    if sweep is not None:
        job.tracker.adopt(run.run_id, sweep.id, job.parent_id)
    log.info(
        "skipped %s: run %s finished with the same config (resume=true)",
        job.spec.label,
        run.run_id,
    )
    return {k: v for k, v in run.metrics.items() if k.startswith(("val_", "test_"))}


def result(ref: JobRef, metrics: Metrics | None) -> Metrics | float | None:
    """What a job hands back to Hydra: its metrics, or with ``objective`` set, that metric
    alone for a search to optimise."""
    return metrics if ref.objective is None else objective_value(ref.objective, metrics)


def objective_value(name: str, metrics: Metrics | None) -> float:
    """The job's metric ``name``, for a search to optimise. A job that diverged or failed
    gets the worst value there is (inf for a loss or an error, -inf for an accuracy): the
    search learns to avoid its config and goes on. (Optuna would drop a NaN as a failed
    trial, and stop with an error at the end when every trial had failed.) An objective
    that the job does not log was refused before it trained
    (:func:`runner.jobs.plan.check_objective`)."""
    if not metrics:
        return math.inf if lower_is_better(name) else -math.inf
    return metrics[name]


def interrupted(ref: JobRef, opened: bool = True) -> NoReturn:
    """After Ctrl-C or SIGTERM (the job's own run is ended KILLED already, when ``opened``):
    end the sweep's parent runs KILLED too, say in one line what was kept, and exit 130. A
    worker of a sweep leaves that to the sweep's process, which stops every worker."""
    sweep = ref.sweep
    if STATE.in_worker(sweep):
        if in_ray_task():
            # Ray cancelled the job (runner.compat.launchers), gives this worker no further
            # job of the sweep, and reports a worker that exits as a crash: the task ends by
            # this.
            raise KeyboardInterrupt(stop.requested)
        stop.leave()
    stop.end_workers()
    if not ref.tracking.enabled:
        log.error("interrupted (tracking.enabled=false: nothing was recorded)")
    elif sweep is None and not opened:
        log.error("interrupted before the run was created: nothing was recorded")
    elif sweep is None:
        log.error("interrupted: the run ended KILLED with the metrics logged so far")
    else:
        _end_sweep(ref.tracking, sweep)
    sys.exit(130)


def stopped() -> NoReturn:
    """After Ctrl-C or SIGTERM outside a job, in Hydra's own work around the jobs (a
    launcher composing or starting them): end the sweep under way as :func:`interrupted`
    does, once its parent run exists; otherwise no run of this process is open."""
    stop.end_workers()
    if STATE.started is not None:
        _end_sweep(STATE.started.tracking, STATE.started.sweep)
    else:
        log.error("interrupted: no run of this process is left RUNNING")
    sys.exit(130)


def _end_sweep(tracking: TrackingSpec, sweep: Sweep) -> None:
    """End the sweep's parent runs KILLED, and say what is kept and how to go on."""
    open_tracker(tracking, STATE.trackers).end_sweep(sweep.id, INTERRUPTED)
    log.error(
        "interrupted: sweep %s stopped; its finished jobs are kept. Re-run the same "
        "command with resume=true to run only the missing ones.",
        sweep.name,
    )
