"""The steps of a job, which :mod:`runner.lifecycle` puts in order: check the config, load
data, build, train and record one MLflow run.

:func:`prepare` checks everything a user can get wrong before a run is created, so a bad
value never leaves a run behind; in a sweep, :func:`record_failure` files the refused job as
a FAILED run so that the sweep's record shows it, and the sweep goes on. :func:`execute`
trains one job, or a fused group of them, each inside its own MLflow run that ends with a
true status on every path.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import MutableMapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import keras
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner import backend, data, engine, figures, model
from runner.checks import validate_names
from runner.config import (
    Objective,
    UserError,
    activation_label,
    experiment_name,
    hidden_activations,
    plain,
    resolve_loss,
    training_key,
)
from runner.metrics import validation_metrics
from runner.sweep import Sweep, position
from runner.tracking import DIVERGED, AnyRun, AnyTracker, FinishedRun, open_tracker, ui_url

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    """``relu-mse-digits-s0``; a per-layer list reads ``relu+tanh-mse-digits-s0``."""
    activations = activation_label(cfg).replace(",", "+")
    return f"{activations}-{cfg.loss.name}-{cfg.dataset.name}-s{cfg.seed}"


def label(cfg: DictConfig) -> str:
    """How the job's console lines name it: its run name, after ``job 3/12`` in a sweep.
    Read in the job's own Hydra context, while it is planned."""
    where = position(HydraConfig.get()) if HydraConfig.initialized() else None
    return f"job {where} {run_name(cfg)}" if where else run_name(cfg)


def flat_params(cfg: DictConfig) -> dict[str, object]:
    """The resolved config as dotted keys, plus the choices a user compares by name."""
    flat: dict[str, object] = {}

    def walk(node: MutableMapping, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(plain(cfg), "")
    flat.update(
        activation=activation_label(cfg),
        loss=cfg.loss.name,
        dataset=cfg.dataset.name,
        optimizer=cfg.optimizer.name,
        seed=cfg.seed,
    )
    return flat


def fingerprint(cfg: DictConfig) -> str:
    """A digest of the job's :func:`training_key`: equal for two jobs that train the same
    model on the same data."""
    return hashlib.sha256(training_key(cfg).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """A job whose config, data, output head and tracking store have all been checked.
    ``finished`` is the earlier run that makes it unnecessary, when ``resume=true``."""

    cfg: DictConfig
    sweep: Sweep | None
    # The job's overrides, as Hydra gives them: saved with its run.
    overrides: list[str]
    dataset: data.Dataset
    head: model.OutputHead
    device: str
    tracker: AnyTracker
    experiment_id: str
    parent_id: str | None
    fingerprint: str
    finished: FinishedRun | None = None
    # Hydra's output directory of the job, where its run keeps what the store did not take;
    # None (the current directory) outside Hydra.
    output_dir: Path | None = None
    # The job in its console lines (see label()).
    label: str = ""
    # Whether :func:`execute` has created its run: a signal before that has none to end.
    opened: bool = False


# Stores whose orphaned runs this process has looked for already.
_reaped: set[str] = set()
# Whether the objects alive before the first job are frozen out of garbage collection.
_frozen = False


def end_orphans_once(tracker: AnyTracker) -> None:
    """Once per store and process: end the runs a killed process left RUNNING, in one line."""
    if tracker.uri in _reaped:
        return
    _reaped.add(tracker.uri)
    names = tracker.reap_orphans()
    if names:
        log.warning(
            "marked %d run(s) left RUNNING by a process that is gone as KILLED "
            "(outcome=interrupted): %s",
            len(names),
            ", ".join(names),
        )


# The last dataset loaded, by its config: the jobs of a sweep mostly share one.
_loaded: dict[str, data.Dataset] = {}


def load_data(cfg: DictConfig) -> data.Dataset:
    """:func:`data.load`, reusing the last result for an equal dataset config. The arrays
    are shared, so nothing may write to them; everything downstream makes its own copies."""
    key = json.dumps(plain(cfg), sort_keys=True)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = data.load(cfg)
    return _loaded[key]


def prepare(cfg: DictConfig, sweep: Sweep | None, overrides: Sequence[str] = ()) -> Plan:
    """Check everything else a user can get wrong once :func:`validate_values` has passed,
    raising :class:`UserError` before any run exists: Keras names, the dataset, the loss
    against the task, the device and the tracking store."""
    validate_names(cfg)
    device = backend.use(cfg.backend.value, cfg.device.value, cfg.train.threads)
    if cfg.train.mixed_precision and device == "cpu":
        log.warning(
            "train.mixed_precision=true on the CPU: it runs, but float16 speeds up GPUs, not CPUs"
        )
    dataset = load_data(cfg.dataset)
    resolve_loss(cfg, dataset.task)
    head = model.output_head(cfg.loss, cfg.model.output_activation, dataset.task, dataset.classes)
    check_objective(cfg.objective, dataset.task)
    tracker = open_tracker(cfg.tracking)
    if not cfg.tracking.enabled and sweep is None:
        log.warning("tracking.enabled=false: nothing is recorded; the metrics are in this log only")
    experiment_id = tracker.experiment(experiment_name(cfg))
    end_orphans_once(tracker)
    parent_id = tracker.sweep_parent(experiment_id, sweep.id, sweep.name) if sweep else None
    digest = fingerprint(cfg)
    finished = tracker.finished_run(experiment_id, digest, logs_model(cfg)) if cfg.resume else None
    return Plan(
        cfg,
        sweep,
        list(overrides),
        dataset,
        head,
        device,
        tracker,
        experiment_id,
        parent_id,
        digest,
        finished,
        output_dir(),
        label(cfg),
    )


def check_objective(objective: Objective | None, task: str) -> None:
    """Refuse an ``objective`` that a job of ``task`` does not log before it trains, not
    once it has trained and its metrics lack it."""
    logged = validation_metrics(task)
    if objective is not None and objective.value not in logged:
        raise UserError(
            f"objective={objective.value} is not a metric of a {task} job; it logs "
            f"{', '.join(logged)}. Pick one of them (with hydra.sweeper.direction=minimize "
            "for a loss or an error)."
        )


def skip(plan: Plan) -> dict[str, float]:
    """Stand in for a job that finished before: move its run into this sweep and return
    its validation and test metrics."""
    run = plan.finished
    if plan.sweep is not None:
        plan.tracker.adopt(run.run_id, plan.sweep.id, plan.parent_id)
    log.info(
        "skipped %s: run %s finished with the same config (resume=true)",
        plan.label,
        run.run_id,
    )
    return {k: v for k, v in run.metrics.items() if k.startswith(("val_", "test_"))}


def execute(plans: Sequence[Plan], group: str | None = None) -> list[dict[str, float]]:
    """Train the jobs, one alone or a fused ``group`` of them as one batch of Keras models
    (their configs differ only in :data:`runner.fused.PER_JOB`), each recorded in its own
    run; a group's runs are tagged ``fused_group`` and ``fused_group_size``. Return each
    job's last-epoch validation metrics and its test metrics (empty when it diverged). An
    exception ends every run FAILED (:meth:`runner.tracking.Run.recording`) and propagates."""
    first = plans[0]
    if group is None:
        log.info("%s: training on %s (%s)", first.label, first.device, first.cfg.backend.value)
        tags = {}
    else:
        tags = {"fused_group": group, "fused_group_size": str(len(plans))}
    fresh_keras()
    with ExitStack() as runs:
        mlruns, members = [], []
        for plan in plans:
            mlrun = runs.enter_context(job_run(plan, tags))
            plan.opened = True
            start(mlrun, plan)
            net = build(plan.cfg, plan.dataset, plan.head)
            log_files(mlrun, plan, net)
            mlruns.append(mlrun)
            members.append(member(plan.cfg, net, plan.head))
        if group is not None:
            log.info("fused group %s: training %d models as one", group, len(members))
        results = engine.train(
            members,
            first.dataset,
            # A sweep's job trains alone in a program its later jobs reuse.
            settings(first.cfg, switching=group is None and first.sweep is not None),
            lambda m, epoch, logs: mlruns[m].log_metrics(logs, step=epoch),
        )
        for mlrun, plan, each, result in zip(mlruns, plans, members, results, strict=True):
            finish(mlrun, plan, result, each.net)
    return [report(*each) for each in zip(mlruns, plans, results, strict=True)]


def fresh_keras() -> None:
    """Drop the Keras state of the jobs before. ``clear_session`` collects garbage in full;
    the objects alive before the first job (the frameworks' and MLflow's modules, hundreds
    of thousands of them) are frozen out of that collection once, which makes it cheap."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True
    keras.backend.clear_session()


def job_run(plan: Plan, tags: dict[str, str]):
    """The job's MLflow run (see :meth:`AnyTracker.open_run`), nested in the sweep's parent."""
    tags = dict(tags, fingerprint=plan.fingerprint, device=plan.device, task=plan.dataset.task)
    if plan.sweep:
        tags["sweep_id"] = plan.sweep.id
    return plan.tracker.open_run(
        plan.experiment_id, run_name(plan.cfg), tags, plan.parent_id, plan.output_dir
    )


def output_dir() -> Path | None:
    """Hydra's output directory of the job being planned; None outside Hydra."""
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def start(mlrun: AnyRun, plan: Plan) -> None:
    """Record what the job is before it trains: params, tags and data."""
    cfg, dataset = plan.cfg, plan.dataset
    mlrun.log_params(flat_params(cfg))
    mlrun.log_inputs(
        dataset.name,
        dataset.source,
        {
            "train": (dataset.x_train, dataset.y_train),
            "validation": (dataset.x_val, dataset.y_val),
            "test": (dataset.x_test, dataset.y_test),
        },
    )


def log_files(mlrun: AnyRun, plan: Plan, net: keras.Model) -> None:
    """Record the job's config, its overrides and its model's summary, in one store call."""
    summary: list[str] = []
    net.summary(print_fn=lambda text, **_: summary.append(text))
    mlrun.log_texts(
        {
            "config.yaml": OmegaConf.to_yaml(plan.cfg, resolve=True),
            "overrides.yaml": OmegaConf.to_yaml(plan.overrides),
            "model_summary.txt": "\n".join(summary),
        }
    )


def finish(mlrun: AnyRun, plan: Plan, result: engine.TrainResult, net: keras.Model) -> None:
    """Record the trained job: test metrics, training time, curves, the trained model
    ``net`` (``tracking.log_model``) and its outcome. A diverged model is not logged: its
    weights are not finite."""
    final = dict(result.test, train_seconds=result.train_seconds)
    mlrun.log_metrics(final)
    if draws_figure(plan):
        metric = "accuracy" if plan.dataset.task == data.CLASSIFICATION else "mae"
        curves = figures.training_curves(result.history, metric, mlrun.name)
        mlrun.log_figure(curves, "training_curves.png")
    if result.diverged_epoch is not None:
        mlrun.outcome = DIVERGED
        mlrun.set_tags({"diverged_at_epoch": result.diverged_epoch})
    elif logs_model(plan.cfg):
        mlrun.log_model(net, step=plan.cfg.train.epochs - 1)


def logs_model(cfg: DictConfig) -> bool:
    """Whether the job logs its trained model (``tracking.log_model``, when it tracks)."""
    return cfg.tracking.enabled and cfg.tracking.log_model


def draws_figure(plan: Plan) -> bool:
    """Whether the run gets its training-curves figure: ``tracking.figure``, or when that
    is null, a single run does and a sweep's jobs do not (the MLflow UI draws each run's
    curves, and ``runner.compare`` the sweep's)."""
    if not plan.cfg.tracking.enabled:
        return False
    if plan.cfg.tracking.figure is None:
        return plan.parent_id is None
    return plan.cfg.tracking.figure


def report(mlrun: AnyRun, plan: Plan, result: engine.TrainResult) -> dict[str, float]:
    """Say how the job ended, once its run has; return its last epoch's validation metrics
    and its test metrics, or nothing when it diverged."""
    if result.diverged_epoch is not None:
        log.warning(
            "%s diverged: the loss stopped being finite at epoch %d; run %s ended FAILED "
            "with outcome=diverged (try a smaller optimizer.learning_rate).",
            plan.label,
            result.diverged_epoch + 1,
            mlrun.run_id,
        )
        return {}
    log.info(
        "%s: %s  (trained in %.1f s on %s)",
        plan.label,
        "  ".join(f"{k}={v:.4f}" for k, v in result.test.items()),
        result.train_seconds,
        plan.device,
    )
    # A sweep prints its parent's address at its end instead of one for each job.
    if plan.cfg.tracking.enabled and plan.parent_id is None:
        log.info(
            "run %s in experiment '%s' of %s; in the MLflow UI (`make ui` serves it): %s",
            mlrun.run_id,
            experiment_name(plan.cfg),
            plan.tracker.uri,
            ui_url(plan.tracker.uri, plan.experiment_id, mlrun.run_id),
        )
    # The last epoch's validation metrics too: what a search (``objective``) optimises.
    last = {name: values[-1] for name, values in result.history.items() if name.startswith("val_")}
    return {**last, **result.test}


def build(cfg: DictConfig, dataset: data.Dataset, head: model.OutputHead) -> keras.Model:
    """The job's model, its initial weights drawn from ``seed``."""
    return model.build_model(
        dataset.features,
        list(cfg.model.units),
        hidden_activations(cfg),
        head,
        cfg.model.kernel_initializer,
        cfg.train.mixed_precision,
        cfg.seed,
    )


def train(
    cfg: DictConfig,
    net: keras.Model,
    dataset: data.Dataset,
    head: model.OutputHead,
    switching: bool = False,
) -> engine.TrainResult:
    """Train the job's model ``net`` alone and unrecorded: a batch of one; ``switching`` as
    in :class:`engine.Settings`."""
    (result,) = engine.train([member(cfg, net, head)], dataset, settings(cfg, switching))
    return result


def member(cfg: DictConfig, net: keras.Model, head: model.OutputHead) -> engine.Member:
    """The job as a model to train: its own weights, loss, learning rate and batch order,
    and whether it needs its trained weights back to log them."""
    return engine.Member(
        net,
        tuple(hidden_activations(cfg)),
        cfg.loss.name,
        head.encoding,
        cfg.optimizer.learning_rate,
        cfg.seed,
        logs_model(cfg),
    )


def settings(cfg: DictConfig, switching: bool = False) -> engine.Settings:
    """What the job's training shares with the others of a fused batch."""
    return engine.Settings(
        cfg.optimizer,
        cfg.train.epochs,
        cfg.train.batch_size,
        cfg.diagnostics.probe_size if cfg.diagnostics.enabled else None,
        cfg.train.steps_per_execution,
        switching,
    )


def record_failure(cfg: DictConfig, sweep: Sweep, error: Exception) -> None:
    """File a sweep job that :func:`prepare` refused as a FAILED run carrying the error, so
    that the sweep's record counts it; when the store itself is the problem, there is
    nowhere to file it and the log keeps the error."""
    # Suppressed: either the run now carries the error, or the store failed and the log,
    # where the caller wrote the error, is all there is.
    with suppress(Exception):
        tracker = open_tracker(cfg.tracking)
        experiment_id = tracker.experiment(experiment_name(cfg))
        parent_id = tracker.sweep_parent(experiment_id, sweep.id, sweep.name)
        with tracker.open_run(
            experiment_id, run_name(cfg), {"sweep_id": sweep.id}, parent_id
        ) as mlrun:
            mlrun.log_params(flat_params(cfg))
            raise error
