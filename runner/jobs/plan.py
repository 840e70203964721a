"""Planning a job: everything a user can get wrong is checked before a run exists.

:func:`plan` checks the job's values, sets up its backend (once per process), checks the
names Keras must know, loads its data, resolves its spec and opens its store: a
:class:`Plan` is a job that only training can still fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from runner import backend
from runner.checks import validate_names, validate_values
from runner.config import Task, UserError
from runner.data import Dataset
from runner.jobs.spec import Compute, DataShape, JobContext, JobSpec, data_of
from runner.jobs.state import STATE
from runner.metrics import validation_metrics
from runner.model import weight_count
from runner.tracking import AnyTracker, FinishedRun, open_tracker

log = logging.getLogger("runner")


@dataclass(kw_only=True)
class Plan:
    """A job whose config, data, output head and tracking store have all been checked:
    its ``spec``, its data, the device it trains on, the store it records in (its
    experiment and its sweep's parent run), and ``finished``, the earlier run that makes
    it unnecessary with ``resume=true``. ``opened``: whether its run has been created; a
    signal before that has none to end."""

    spec: JobSpec
    dataset: Dataset
    device: str
    tracker: AnyTracker
    experiment_id: str
    parent_id: str | None
    finished: FinishedRun | None = None
    opened: bool = False


def plan(cfg: DictConfig, context: JobContext) -> Plan:
    """The checked job ``cfg``, run in ``context``; :class:`UserError` saying what is wrong
    before any run exists. Keras, and with it the job's backend, is imported only once the
    values have passed :func:`validate_values`, so that a bad value is reported at once."""
    validate_values(cfg)
    compute = Compute.from_cfg(cfg, context)
    device = backend.use(compute.backend, compute.device, compute.threads, STATE.compute)
    validate_names(cfg)
    dataset = STATE.dataset(data_of(cfg))
    shape = DataShape(
        dataset.name, dataset.task, dataset.classes, dataset.features, dataset.image_shape
    )
    spec = JobSpec.from_cfg(cfg, context, shape)
    if spec.model.mixed_precision and device == "cpu":
        log.warning(
            "train.mixed_precision=true on the CPU: it runs, but float16 speeds up GPUs, not CPUs"
        )
    check_objective(spec.objective, dataset.task)
    check_monitor(spec.early_stopping and spec.early_stopping.monitor, dataset.task)
    check_size(spec, dataset.features, backend.memory_bytes(spec.compute.backend, device))
    tracker = open_tracker(spec.tracking, STATE.trackers)
    if not spec.tracking.enabled and spec.sweep is None:
        log.warning("tracking.enabled=false: nothing is recorded; the metrics are in this log only")
    experiment_id = tracker.experiment(spec.tracking.experiment)
    STATE.end_orphans_once(tracker)
    sweep = spec.sweep
    parent_id = (
        tracker.sweep_parent(spec.tracking.experiment, sweep.id, sweep.name) if sweep else None
    )
    finished = (
        tracker.finished_run(experiment_id, spec.fingerprint, spec.tracking.logs_model)
        if spec.resume
        else None
    )
    return Plan(
        spec=spec,
        dataset=dataset,
        device=device,
        tracker=tracker,
        experiment_id=experiment_id,
        parent_id=parent_id,
        finished=finished,
    )


# What training holds per weight, at least: the weight, its gradient and an optimizer's two
# slots (Adam's), in float32.
BYTES_PER_WEIGHT = 4 * 4


def check_size(spec: JobSpec, inputs: int, memory: int | None) -> None:
    """Refuse a model whose weights alone, with their gradients and optimizer state, take
    more than the ``memory`` it would train in: it would fail in the middle of its run, or
    meet the operating system's out-of-memory killer."""
    weights = weight_count(spec.model, inputs)
    needed = weights * BYTES_PER_WEIGHT
    if memory is not None and needed > memory:
        layers = f"model.units={list(spec.model.units)}"
        if spec.model.filters:
            layers = f"model.filters={list(spec.model.filters)} and {layers}"
        raise UserError(
            f"{layers} on {inputs} features makes a model of {weights:,} weights: "
            f"training it takes at least {needed / 2**30:,.1f} GiB (each weight, its gradient "
            f"and its optimizer state), more than the {memory / 2**30:,.1f} GiB of memory it "
            "would train in. Use fewer or narrower hidden layers."
        )


def check_objective(objective: str | None, task: Task) -> None:
    """Refuse an ``objective`` that a job of ``task`` does not log before it trains, not
    once it has trained and its metrics lack it."""
    logged = validation_metrics(task)
    if objective is not None and objective not in logged:
        raise UserError(
            f"objective={objective} is not a metric of a {task} job; it logs "
            f"{', '.join(logged)}. Pick one of them (with hydra.sweeper.direction=minimize "
            "for a loss or an error)."
        )


def check_monitor(monitor: str | None, task: Task) -> None:
    """Refuse an early-stopping ``monitor`` that a job of ``task`` does not log."""
    logged = validation_metrics(task)
    if monitor is not None and monitor not in logged:
        raise UserError(
            f"train.early_stopping.monitor={monitor} is not a metric of a {task} job; it "
            f"logs {', '.join(logged)}."
        )
