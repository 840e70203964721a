"""Executing planned jobs: one alone, or a fused group of them trained as one batch of Keras
models, each recorded in its own MLflow run (:class:`runner.jobs.record.JobRecord`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace

import keras

from runner import engine
from runner.backend import cache_damage_said
from runner.jobs.plan import Plan
from runner.jobs.record import JobRecord, job_run
from runner.jobs.spec import JobSpec
from runner.jobs.state import STATE
from runner.model import build_model, initial_values

log = logging.getLogger("runner")

Metrics = dict[str, float]


def execute(plans: Sequence[Plan], group: str | None = None) -> list[Metrics]:
    """Train the jobs, one alone or a fused ``group`` of them as one batch of Keras models
    (their specs differ only in each member's own values), each recorded in its own run; a
    group's runs are tagged ``fused_group`` and ``fused_group_size``. Return each job's
    last-epoch validation metrics and its test metrics (empty when it diverged). An
    exception ends every run FAILED (:meth:`runner.tracking.Run.recording`) and propagates."""
    first = plans[0].spec
    if group is None:
        log.info("%s: training on %s (%s)", first.label, plans[0].device, first.compute.backend)
        tags = {}
    else:
        tags = {"fused_group": group, "fused_group_size": str(len(plans))}
    fresh_keras()
    with ExitStack() as runs:
        runs.enter_context(cache_damage_said(STATE.damaged_cache))
        records, members = [], []
        # A fused group's members of one spec share one model (JAX trains copies of their
        # weights); a member that logs its trained model keeps one of its own.
        shared: dict | None = {} if group is not None and keras.backend.backend() == "jax" else None
        for plan in plans:
            record = JobRecord(plan, runs.enter_context(job_run(plan, tags)))
            plan.opened = True
            net, initial = built(plan, shared)
            record.start(net)
            records.append(record)
            members.append(replace(member(plan.spec, net), initial=initial))
        if group is not None:
            log.info("fused group %s: training %d models as one", group, len(members))
        results = engine.train(
            members,
            plans[0].dataset,
            # A sweep's job trains alone in a program its later jobs reuse.
            settings(first, switching=group is None and first.sweep is not None),
            lambda m, epoch, logs: records[m].run.log_metrics(logs, step=epoch),
            STATE.programs,
        )
        for record, each, result in zip(records, members, results, strict=True):
            record.finish(result, each.net)
    return [record.report(result) for record, result in zip(records, results, strict=True)]


def fresh_keras() -> None:
    """Drop the Keras state of the jobs before. ``clear_session`` collects garbage in full,
    which the process state's frozen objects make cheap."""
    STATE.freeze_once()
    keras.backend.clear_session()


def build(plan: Plan) -> keras.Model:
    """The job's model, its initial weights drawn from its seed."""
    spec = plan.spec
    return build_model(spec.model, plan.dataset.features, spec.seed)


def built(plan: Plan, shared: dict | None) -> tuple[keras.Model, tuple | None]:
    """The job's model and, when that model is ``shared`` with the fused group's earlier
    members of the same spec, the job's own initial weights (:func:`initial_values`, equal
    to its own model's); None: the model holds them. ``shared``: the group's models by
    spec; None: each job builds its own."""
    spec = plan.spec
    if shared is None or spec.tracking.logs_model:
        return build(plan), None
    key = (spec.model, plan.dataset.features)
    if key not in shared:
        shared[key] = build(plan)
        return shared[key], None
    net = shared[key]
    return net, initial_values(net, spec.model, spec.seed)


def member(spec: JobSpec, net: keras.Model) -> engine.Member:
    """The job as a model to train: its own weights, loss, learning rate, batch order and
    early stopping, and whether it needs its trained weights back to log them."""
    return engine.Member(
        net,
        spec.model,
        spec.loss,
        spec.model.head.encoding,
        spec.learning_rate,
        spec.seed,
        spec.tracking.logs_model,
        spec.early_stopping,
        spec.optimizer,
    )


def settings(spec: JobSpec, switching: bool = False) -> engine.Settings:
    """What the job's training shares with the others of a fused group; ``switching`` as
    in :class:`engine.Settings`."""
    training = spec.training
    return engine.Settings(
        spec.optimizer,
        training.epochs,
        training.batch_size,
        training.probe_size,
        training.steps_per_execution,
        switching,
    )
