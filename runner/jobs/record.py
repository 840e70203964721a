"""A job's record: its MLflow run, from what the job is before it trains to how it ended,
and the console lines that say so.

:class:`JobRecord` writes a planned job's run; :func:`file_refusal` files a sweep's job
that planning refused as a FAILED run carrying the error, so that the sweep's record
counts it. Neither decides a status: an exception becomes one in
:meth:`runner.tracking.Run.recording` alone, or explicitly in :meth:`Run.fail`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from runner.config import Task
from runner.engine import TrainResult
from runner.jobs.plan import Plan
from runner.jobs.spec import JobRef
from runner.jobs.state import STATE
from runner.tracking import DIVERGED, AnyRun, open_tracker
from runner.tracking.store import masked, reason
from runner.tracking.ui import ui_line

if TYPE_CHECKING:
    import keras

log = logging.getLogger("runner")


def job_run(plan: Plan, tags: dict[str, str]) -> AbstractContextManager[AnyRun]:
    """The job's MLflow run, nested in its sweep's parent, ended on every path
    (:meth:`AnyTracker.open_run`). A sweep's job in the sweep's own process does not wait
    for its record: the next job trains while the writer writes it, and the sweep waits
    at its end; a job in a worker of its own waits, as a single run does."""
    spec = plan.spec
    tags = dict(tags, fingerprint=spec.fingerprint, device=plan.device, task=str(spec.task))
    if spec.sweep:
        tags["sweep_id"] = spec.sweep.id
        tags["overrides"] = " ".join(spec.overrides)
    deferred = spec.sweep is not None and not STATE.in_worker(spec.sweep)
    return plan.tracker.open_run(
        plan.experiment_id, spec.name, tags, plan.parent_id, spec.output_dir, deferred
    )


class JobRecord:
    """What a planned job's run records, in order: :meth:`start` before it trains,
    :meth:`finish` once it has, then :meth:`report` on the console."""

    def __init__(self, plan: Plan, run: AnyRun):
        self.plan = plan
        self.run = run

    def start(self, net: keras.Model) -> None:
        """Record what the job is: its params and data; for a single run, its config, its
        overrides and its model's summary too, in one store call (a sweep's job has its
        config in its params and its Hydra directory, its overrides as a tag: one artifact
        call a job less)."""
        spec, dataset, run = self.plan.spec, self.plan.dataset, self.run
        run.log_params(spec.params)
        run.log_inputs(
            dataset.name,
            dataset.source,
            {
                "train": (dataset.x_train, dataset.y_train),
                "validation": (dataset.x_val, dataset.y_val),
                "test": (dataset.x_test, dataset.y_test),
            },
        )
        if spec.sweep is not None:
            return
        summary: list[str] = []
        net.summary(print_fn=lambda text, **_: summary.append(text))
        run.log_texts(
            {
                "config.yaml": spec.config_yaml,
                "overrides.yaml": OmegaConf.to_yaml(list(spec.overrides)),
                "model_summary.txt": "\n".join(summary),
            }
        )

    def finish(self, result: TrainResult, net: keras.Model) -> None:
        """Record the trained job: test metrics, training time, curves, the trained model
        ``net`` (``tracking.log_model``) and its outcome. A diverged model is not logged:
        its weights are not finite."""
        spec, run = self.plan.spec, self.run
        run.log_metrics(dict(result.test, train_seconds=result.train_seconds, **_stopping(result)))
        if self.draws_figure():
            # matplotlib, for the runs that draw only.
            from runner.figures import training_curves

            metric = "accuracy" if spec.task is Task.classification else "mae"
            curves = training_curves(result.history, result.epochs, metric, run.name, STATE.figures)
            run.log_figure(curves, "training_curves.png")
        if result.diverged_epoch is not None:
            run.outcome = DIVERGED
            # Counted from 1, as the console's lines and the report count epochs.
            run.set_tags({"diverged_at_epoch": result.diverged_epoch + 1})
        elif spec.tracking.logs_model:
            run.log_model(net, step=spec.training.epochs - 1)

    def draws_figure(self) -> bool:
        """Whether the run gets its training-curves figure: ``tracking.figure``, or when
        that is null, a single run does and a sweep's jobs do not (the MLflow UI draws each
        run's curves, and ``runner.compare`` the sweep's)."""
        tracking = self.plan.spec.tracking
        if not tracking.enabled:
            return False
        if tracking.figure is None:
            return self.plan.parent_id is None
        return tracking.figure

    def report(self, result: TrainResult) -> dict[str, float]:
        """Say how the job ended, once its run has; return its last epoch's validation
        metrics and its test metrics, or nothing when it diverged."""
        plan, run = self.plan, self.run
        spec = plan.spec
        if result.diverged_epoch is not None:
            log.warning(
                "%s diverged: the loss stopped being finite at epoch %d; run %s ended FAILED "
                "with outcome=diverged (try a smaller optimizer.learning_rate).",
                spec.label,
                result.diverged_epoch + 1,
                run.run_id,
            )
            return {}
        if result.stopped_epoch is not None:
            log.info(
                "%s stopped early at epoch %d (best: %d)",
                spec.label,
                result.stopped_epoch + 1,
                result.best_epoch + 1,
            )
        log.info(
            "%s: %s  (trained in %.1f s on %s)",
            spec.label,
            "  ".join(f"{k}={v:.4f}" for k, v in result.test.items()),
            result.train_seconds,
            plan.device,
        )
        # A sweep prints its parent's address at its end instead of one for each job.
        if spec.tracking.enabled and plan.parent_id is None:
            log.info(
                "run %s in experiment '%s' of %s; %s",
                run.run_id,
                spec.tracking.experiment,
                masked(plan.tracker.uri),
                ui_line(plan.tracker.uri, plan.experiment_id, run.run_id),
            )
        # The last epoch's validation metrics too: what a search (``objective``) optimises.
        last = {k: value for k, value in result.last.items() if k.startswith("val_")}
        return {**last, **result.test}


def _stopping(result: TrainResult) -> dict[str, int]:
    """What early stopping decided, as metrics counted from 1 as the console counts epochs:
    ``best_epoch`` and, when it stopped before the last epoch, ``stopped_epoch``."""
    epochs = {"best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch}
    return {name: epoch + 1 for name, epoch in epochs.items() if epoch is not None}


def file_refusal(ref: JobRef, error: Exception) -> None:
    """File a sweep's job that planning refused as a FAILED run carrying ``error``, so
    that the sweep's record counts it. When the store itself is the problem there is
    nowhere to file it, and the log, where the caller wrote the error, keeps it."""
    if not ref.tracking.enabled or ref.sweep is None:
        return
    try:
        tracker = open_tracker(ref.tracking, STATE.trackers)
        experiment_id = tracker.experiment(ref.tracking.experiment)
        parent_id = tracker.sweep_parent(ref.tracking.experiment, ref.sweep.id, ref.sweep.name)
        run = tracker.start_run(experiment_id, ref.name, {"sweep_id": ref.sweep.id}, parent_id)
        run.log_params(ref.params)
        run.fail(error)
    except Exception as failure:  # whatever it is, the sweep goes on
        log.warning("%s: its refusal could not be recorded (%s)", ref.label, reason(failure))
