"""A job's spec: its composed config, once checked, resolved into frozen, typed values.

This is the one reader of a job's config after :mod:`runner.checks`: :meth:`JobRef.from_cfg`
reads what names and records a job (enough to refuse it), :meth:`JobSpec.from_cfg` the rest
once the job's data says what its task is (:mod:`runner.jobs.keys`: what identifies it).
From there on the engine, the tracking code, the fused launcher and compare take a spec,
never the config.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.config import (
    AUTO,
    CONF,
    DatasetConfig,
    LossConfig,
    ModelName,
    Task,
    UserError,
    activation_label,
    layer_activations,
    per_layer,
)
from runner.engine import EarlyStopping, OptimizerKind, Schedule
from runner.jobs.keys import config_view, flat_params, masked_override, training_key
from runner.model import ModelSpec, OutputHead, auto_initializer, output_head
from runner.sweep import Sweep, position, sweep_of, threads_per_job
from runner.tracking.store import tracking_uri

# loss=auto: the loss each task gets.
AUTO_LOSS = {Task.classification: "categorical_crossentropy", Task.regression: "mse"}


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """Where and what a job records (``tracking.*``, resolved): the store's ``uri``, the
    ``experiment`` (the dataset's name unless named), the per-run ``figure`` (None: a
    single run draws one, a sweep's jobs do not)."""

    enabled: bool
    uri: str
    experiment: str
    figure: bool | None
    log_model: bool
    adopt_foreign_db: bool

    @property
    def logs_model(self) -> bool:
        """Whether the job logs its trained model: ``tracking.log_model``, when it tracks."""
        return self.enabled and self.log_model

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> TrackingSpec:
        tracking = cfg.tracking
        return cls(
            enabled=tracking.enabled,
            uri=tracking_uri(tracking.uri),
            experiment=tracking.experiment or cfg.dataset.name,
            figure=tracking.figure,
            log_model=tracking.log_model,
            adopt_foreign_db=tracking.adopt_foreign_db,
        )


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """Where a job runs, as Hydra says (:meth:`from_hydra`): its sweep (None: a single
    run), its place in it (``3/12``), its output directory and overrides, and the CPU
    threads its launcher gives each of the jobs it runs side by side (None: all cores).
    Outside Hydra, none of them."""

    sweep: Sweep | None = None
    position: str | None = None
    output_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    threads: int | None = None

    @classmethod
    def from_hydra(cls) -> JobContext:
        if not HydraConfig.initialized():
            return cls()
        hydra = HydraConfig.get()
        return cls(
            sweep=sweep_of(hydra),
            position=position(hydra),
            output_dir=Path(hydra.runtime.output_dir),
            overrides=tuple(masked_override(text) for text in hydra.overrides.task),
            threads=threads_per_job(hydra),
        )


@dataclass(frozen=True, kw_only=True)
class Compute:
    """The Keras backend, the device asked for and the CPU threads (None: all cores)."""

    backend: str
    device: str
    threads: int | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig, context: JobContext) -> Compute:
        """``train.threads``, or when unset, the share of the cores that the job's launcher
        gives each job it runs side by side (:func:`runner.sweep.threads_per_job`)."""
        threads = context.threads if cfg.train.threads is None else cfg.train.threads
        return cls(backend=cfg.backend.value, device=cfg.device.value, threads=threads)


@dataclass(frozen=True, kw_only=True)
class JobRef:
    """What names and records a job, read before its values are checked: enough to refuse
    it, file the refusal in its sweep and hand Hydra a result. ``label`` is how its console
    lines name it (``job 3/12 relu-mse-digits-s0`` in a sweep)."""

    name: str
    label: str
    params: dict[str, object]
    tracking: TrackingSpec
    objective: str | None
    sweep: Sweep | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig, context: JobContext) -> JobRef:
        return cls(**_ref_fields(cfg, context, config_view(cfg), cfg.loss.name))


def _ref_fields(
    cfg: DictConfig, context: JobContext, view: dict[str, Any], loss: str
) -> dict[str, Any]:
    """The fields of :class:`JobRef`: its params from the config ``view``, its name from
    its activations, its ``loss``, its dataset and its seed."""
    activations = activation_label(cfg)
    name = f"{activations.replace(',', '+')}-{loss}-{cfg.dataset.name}-s{cfg.seed}"
    if cfg.model.name is not ModelName.mlp:
        name = f"{cfg.model.name.value}-{name}"
    where = context.position
    choices = {
        "activation": activations,
        "loss": loss,
        "dataset": cfg.dataset.name,
        "optimizer": cfg.optimizer.name,
        "seed": cfg.seed,
    }
    return dict(
        name=name,
        label=f"job {where} {name}" if where else name,
        params=flat_params(view, choices),
        tracking=TrackingSpec.from_cfg(cfg),
        objective=None if cfg.objective is None else cfg.objective.value,
        sweep=context.sweep,
    )


@dataclass(frozen=True, kw_only=True)
class Training:
    """How a job trains, shared by the jobs of a fused group: epochs, batch size,
    TensorFlow's ``steps_per_execution``, and the diagnostics' probe (None: off)."""

    epochs: int
    batch_size: int
    steps_per_execution: int
    probe_size: int | None


@dataclass(frozen=True, kw_only=True)
class JobSpec(JobRef):
    """A checked job, resolved for its data's ``task``: the model (widths, an activation
    per hidden layer, the initializer, the output head), the loss, the optimizer with the
    job's own learning rate, the seed, when it stops early (None: never), the data it
    trains on, how it trains, where it runs, and what it records (the resolved ``config``
    as plain data, :attr:`config_yaml` as a single run logs it, the ``overrides`` Hydra
    gave it, its output directory, None outside Hydra). ``fingerprint``: equal for two
    jobs that train the same model on the same data."""

    fingerprint: str
    task: Task
    model: ModelSpec
    loss: str
    optimizer: OptimizerKind
    learning_rate: float
    seed: int
    early_stopping: EarlyStopping | None
    training: Training
    data: DatasetConfig
    compute: Compute
    resume: bool
    config: dict[str, Any]
    overrides: tuple[str, ...]
    output_dir: Path | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig, context: JobContext, data: DataShape) -> JobSpec:
        """The job ``cfg`` asks for, run in ``context``, on data of that ``data``:
        ``loss=auto`` becomes the loss that fits the task, as if the user had named it, and
        ``model.kernel_initializer=auto`` an initializer per layer (recorded as the param
        ``model.kernel_initializer.resolved``), and a schedule's ``optimizer.decay_epochs``
        its epochs (``optimizer.decay_epochs.resolved``)."""
        loss = resolved_loss(cfg.loss, data.task)
        compute = Compute.from_cfg(cfg, context)
        view = config_view(cfg)
        view["loss"] = OmegaConf.to_container(OmegaConf.structured(loss), enum_to_str=True)
        view["train"]["threads"] = compute.threads
        head = output_head(loss, cfg.model.output_activation, data.task, data.classes)
        model = model_spec(cfg, head, data)
        ref = _ref_fields(cfg, context, view, loss.name)
        ref["params"]["model.kernel_initializer.resolved"] = _label(model.kernel_initializers)
        schedule = schedule_of(cfg)
        if schedule.name != "constant":
            ref["params"]["optimizer.decay_epochs.resolved"] = schedule.decay_epochs
        return cls(
            **ref,
            fingerprint=hashlib.sha256(training_key(view).encode()).hexdigest()[:16],
            task=data.task,
            model=model,
            loss=loss.name,
            optimizer=OptimizerKind(
                cfg.optimizer.name,
                cfg.optimizer.momentum,
                schedule,
                cfg.optimizer.clipnorm,
                cfg.optimizer.clipvalue,
                cfg.optimizer.nesterov,
                cfg.optimizer.weight_decay,
            ),
            learning_rate=cfg.optimizer.learning_rate,
            seed=cfg.seed,
            early_stopping=early_stopping(cfg),
            training=Training(
                epochs=cfg.train.epochs,
                batch_size=cfg.train.batch_size,
                steps_per_execution=cfg.train.steps_per_execution,
                probe_size=cfg.diagnostics.probe_size if cfg.diagnostics.enabled else None,
            ),
            data=data_of(cfg),
            compute=compute,
            resume=cfg.resume,
            config=view,
            overrides=context.overrides,
            output_dir=context.output_dir,
        )

    @property
    def config_yaml(self) -> str:
        """The resolved config as YAML. Made when read (a single run logs it, a sweep's job
        does not): it costs more than the rest of the spec."""
        return OmegaConf.to_yaml(OmegaConf.create(self.config))


@dataclass(frozen=True)
class DataShape:
    """What a job's spec needs to know of its data: the ``task``, the ``classes`` (None
    for regression), the ``features`` and, for images, their shape."""

    name: str
    task: Task
    classes: int | None
    features: int
    image_shape: tuple[int, int, int] | None = None


def model_spec(cfg: DictConfig, head: OutputHead, data: DataShape) -> ModelSpec:
    """The job's model, its initializers resolved; ``model=cnn`` on data that is not images
    is refused, saying which datasets are."""
    model = cfg.model
    cnn = model.name is ModelName.cnn
    if cnn and data.image_shape is None:
        raise UserError(
            f"model=cnn needs images, but dataset={data.name} is {data.features} features "
            "with no image shape. Image datasets: digits, mnist5k, mnist, fashion_mnist, "
            "cifar10, or npz with x of shape (samples, height, width[, channels]); or use "
            "model=mlp."
        )
    activations = layer_activations(cfg)
    given = per_layer(model.kernel_initializer, len(activations))
    initializers = [
        auto_initializer(a) if name == AUTO else name
        for a, name in zip(activations, given, strict=True)
    ]
    # The output layer: the one name given for every layer, or auto's for its activation.
    single = isinstance(model.kernel_initializer, str) and model.kernel_initializer != AUTO
    initializers.append(model.kernel_initializer if single else auto_initializer(head.activation))
    return ModelSpec(
        units=tuple(model.units),
        activations=activations,
        head=head,
        kernel_initializers=tuple(initializers),
        filters=tuple(model.filters) if cnn else (),
        kernel_size=model.kernel_size,
        image_shape=data.image_shape if cnn else None,
        normalization=model.normalization,
        normalization_position=model.normalization_position,
        dropout=model.dropout,
        dropout_kind=model.dropout_kind,
        mixed_precision=cfg.train.mixed_precision,
        l2=model.l2,
    )


def _label(names: tuple[str, ...]) -> str:
    """Per-layer names as one param: the one name when all are equal, else them all."""
    return names[0] if len(set(names)) == 1 else ",".join(names)


def schedule_of(cfg: DictConfig) -> Schedule:
    """``optimizer.schedule`` with its arguments, ``decay_epochs`` resolved: when null, the
    rest of the training after the warmup (``step``: a third of it, rounded up)."""
    optimizer, epochs = cfg.optimizer, cfg.train.epochs
    name = optimizer.schedule.value
    if name == "constant":
        return Schedule()
    warmup = optimizer.warmup_epochs if name == "warmup_cosine" else 0
    default = -(-epochs // 3) if name == "step" else epochs - warmup
    return Schedule(
        name,
        optimizer.decay_epochs or default,
        optimizer.decay_rate,
        optimizer.alpha,
        warmup,
    )


def early_stopping(cfg: DictConfig) -> EarlyStopping | None:
    """``train.early_stopping``, resolved: None when it is off."""
    rule = cfg.train.early_stopping
    if not rule.enabled:
        return None
    return EarlyStopping(rule.monitor.value, rule.patience, rule.min_delta, rule.restore_best)


def data_of(cfg: DictConfig) -> DatasetConfig:
    """The job's dataset and how it is cut, typed."""
    return OmegaConf.to_object(cfg.dataset)


def resolved_loss(loss: DictConfig, task: Task) -> LossConfig:
    """The job's loss config, typed: ``loss=auto`` replaced by the config of the loss that
    fits ``task`` (conf/loss/), as if the user had named it."""
    if loss.name == AUTO:
        chosen = OmegaConf.load(CONF / "loss" / f"{AUTO_LOSS[task]}.yaml")
        loss = OmegaConf.merge(OmegaConf.structured(LossConfig), chosen)
    return OmegaConf.to_object(loss)
