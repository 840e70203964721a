"""The typed schema of the configuration, with every default, and what a job reads from it.

The dataclasses are registered in Hydra's ConfigStore as ``schema`` and named first in
``conf/config.yaml``'s defaults, so a value of the wrong type (``train.epochs=abc``) or an
unknown key fails while Hydra composes the config, before Keras is imported. The checks
Hydra's types cannot express (ranges, lengths, Keras's identifiers) are in runner/checks.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, open_dict

CONF = Path(__file__).resolve().parent.parent / "conf"

# ``${pid:}``, this process's id, makes a sweep's directory its own (conf/config.yaml): Hydra's
# clock has one-second resolution, and two sweeps started in the same second would share
# one. Cached, as Hydra's ``now`` is, so that each job resolves the sweep's directory to the
# same value in a launcher's worker process too. Registered on import, as every process that
# runs a job imports this module.
if not OmegaConf.has_resolver("pid"):
    OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)


class UserError(Exception):
    """A mistake in the user's configuration or data: reported as a message, not a traceback."""


class Backend(Enum):
    """Keras's backend: JAX (the default: fast small models, fused sweeps, the GPU path)
    or TensorFlow."""

    jax = "jax"
    tensorflow = "tensorflow"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class Encoding(Enum):
    """How targets are fed to a loss: class labels one-hot, as integers, as one 0/1 column,
    or continuous values."""

    onehot = "onehot"
    integer = "integer"
    binary = "binary"
    continuous = "continuous"


@dataclass
class Head:
    """What a loss needs for one kind of task: the target encoding and the output activation
    used when ``model.output_activation=auto``."""

    encoding: Encoding = MISSING
    output_activation: str = MISSING


@dataclass
class LossConfig:
    """A loss (``name`` is Keras's identifier) and the tasks it can train; a task left
    ``null`` is refused before training."""

    name: str = MISSING
    classification: Head | None = None
    regression: Head | None = None


@dataclass
class OptimizerConfig:
    """A Keras optimizer by identifier; ``momentum`` applies to sgd and rmsprop only."""

    name: str = MISSING
    learning_rate: float = 0.001
    momentum: float | None = None


class Scale(Enum):
    standard = "standard"
    minmax = "minmax"
    none = "none"


class Objective(Enum):
    """What a search (``hparams_search``) optimises: a validation metric at the last epoch.
    Never a test metric, so that the test split stays unseen until the final comparison."""

    val_loss = "val_loss"
    val_accuracy = "val_accuracy"
    val_mae = "val_mae"
    val_rmse = "val_rmse"


class TaskChoice(Enum):
    auto = "auto"
    classification = "classification"
    regression = "regression"


@dataclass
class DatasetConfig:
    """A registered dataset and how it is cut: ``test_size`` and ``val_size`` are fractions
    of all samples; ``seed`` fixes the data itself (the synthetic samples, the subsample,
    the split), apart from the training ``seed``, so that every training seed sees the
    same data. The other keys apply to the datasets that name them in their YAML."""

    name: str = MISSING
    test_size: float = 0.2
    val_size: float = 0.2
    seed: int = 0
    scale: Scale = Scale.standard
    subsample: int | None = None
    n_samples: int | None = None
    noise: float | None = None
    path: str | None = None
    target: str | None = None
    task: TaskChoice = TaskChoice.auto
    max_categories: int = 50
    dropna: bool = False
    download: bool = False


@dataclass
class ModelConfig:
    """The hidden layers' widths, one Dense layer each, and the output layer."""

    units: list[int] = field(default_factory=lambda: [64, 64])
    # auto: the output activation that goes with the loss and the task (see conf/loss/).
    output_activation: str = "auto"
    kernel_initializer: str = "glorot_uniform"


@dataclass
class TrainConfig:
    """``steps_per_execution`` batches run in one TensorFlow call: fewer round trips from
    Python, the same updates (JAX runs a whole epoch in one call)."""

    epochs: int = 20
    batch_size: int = 32
    steps_per_execution: int = 64
    # CPU threads per job; null: all cores, or a share of them per worker when a parallel
    # launcher runs several jobs at once (see runner/__main__.py). TensorFlow takes any
    # count; JAX's XLA either one thread (threads=1) or all cores.
    threads: int | None = None
    # Hidden layers compute in float16 (weights stay float32), the output layer and the loss
    # in float32, with loss scaling: Keras's mixed_float16, set per layer (runner/model.py).
    # For GPUs: on a CPU it runs, with a warning, but is no faster.
    mixed_precision: bool = False


@dataclass
class DiagnosticsConfig:
    """Per-layer gradient norms and dead or saturated units (``grad_norm/hidden_i``,
    ``dead_fraction/hidden_i``, ``saturated_fraction/hidden_i``), measured at each epoch's
    end on ``probe_size`` training samples (names in runner/metrics.py; each engine measures
    them with its backend's gradients)."""

    enabled: bool = True
    probe_size: int = 256


@dataclass
class TrackingConfig:
    """Where and what MLflow records. ``enabled: false`` trains without opening a store:
    nothing is recorded, the metrics are in the job's log only."""

    enabled: bool = True
    # null: $MLFLOW_TRACKING_URI when set, else sqlite:///<project root>/mlflow.db
    uri: str | None = None
    # null: the dataset's name
    experiment: str | None = None
    # The per-run figure training_curves.png. null: a single run gets one, a sweep's jobs do
    # not (the MLflow UI draws each run's curves; runner.compare draws the sweep's figure).
    figure: bool | None = None
    # true: each trained model is logged as an MLflow model (Keras's flavour) in its run, for
    # mlflow.pyfunc.load_model("runs:/<run id>/model"); a diverged or failed run logs none.
    log_model: bool = False
    # true: record into a SQLite file that holds another application's tables, adding
    # MLflow's beside them; false refuses such a file before MLflow touches it.
    adopt_foreign_db: bool = False


@dataclass
class Config:
    """Every key a user can set, with its default: the source of ``--help`` and ``--cfg
    job`` (docs/configuration.md describes them). ``dataset``, ``loss`` and ``optimizer``
    are config groups, filled by conf/config.yaml's defaults list."""

    dataset: DatasetConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    # One Keras activation for every hidden layer, or a list with one per layer: [relu,tanh].
    # Typed Any because OmegaConf cannot express "str or list of str"; runner/checks.py
    # checks it.
    activation: Any = "relu"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    # Fixes the initial weights and the batch order (dataset.seed fixes the data).
    seed: int = 0
    # A process keeps its backend: sweep it with a launcher that starts a process per job.
    backend: Backend = Backend.jax
    # auto: the GPU when the backend sees one; cpu: hide GPUs; gpu: fail when there is none.
    device: Device = Device.auto
    # true: skip a job whose config already has a FINISHED run in the experiment (finishes a
    # sweep that was interrupted). Off by default: the config cannot see a change of code.
    resume: bool = False
    # null: a job returns its metrics. A metric: a job returns its last-epoch value, for a
    # search to optimise (the worst value, inf or -inf, when the job diverged or failed).
    objective: Objective | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def register() -> None:
    """Register the schema so that ``conf/config.yaml`` can name it in its defaults, and
    spare Hydra its copies of the ConfigStore (runner/patches.py)."""
    from runner.patches import hydra_config_store_copies_as_itself

    hydra_config_store_copies_as_itself()
    ConfigStore.instance().store(name="schema", node=Config)


def per_layer_activations(cfg: DictConfig) -> list | None:
    """``activation`` as its items when it is a list, one per hidden layer; None when it is
    one name for every layer."""
    activation = cfg.activation
    return list(activation) if isinstance(activation, ListConfig | list | tuple) else None


def hidden_activations(cfg: DictConfig) -> list[str]:
    """``activation`` as one name per hidden layer."""
    per_layer = per_layer_activations(cfg)
    if per_layer is None:
        return [str(cfg.activation)] * len(cfg.model.units)
    return [str(a) for a in per_layer]


def activation_label(cfg: DictConfig) -> str:
    """``activation`` as the user gave it: ``relu``, or ``relu,tanh,sigmoid`` for a list."""
    per_layer = per_layer_activations(cfg)
    return str(cfg.activation) if per_layer is None else ",".join(str(a) for a in per_layer)


def plain(value: Any) -> Any:
    """A config value, resolved, as plain data with enums as their names: what is hashed,
    logged and compared, never OmegaConf's nodes."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value.name if isinstance(value, Enum) else value


# What does not change a job's result: where it is recorded, whether it may be skipped,
# what it returns to a search, and how many threads compute it.
NOT_TRAINING = ("tracking", "resume", "objective", "train.threads")


def training_key(cfg: DictConfig, drop: tuple[str, ...] = ()) -> str:
    """The job's resolved config as canonical JSON, without Hydra's node, the keys in
    :data:`NOT_TRAINING` and the dotted keys in ``drop``: what a job's fingerprint digests
    and a fused group's jobs share."""
    # Hydra's node is left out unresolved: it refers to a job directory not made yet.
    view = {key: plain(value) for key, value in cfg.items() if key != "hydra"}
    for dotted in (*NOT_TRAINING, *drop):
        *parents, leaf = dotted.split(".")
        node = view
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return json.dumps(view, sort_keys=True, default=str)


def experiment_name(cfg: DictConfig) -> str:
    """``tracking.experiment``, or the dataset's name when it is not set."""
    return cfg.tracking.experiment or cfg.dataset.name


# loss=auto: the loss each task gets.
AUTO = "auto"
AUTO_LOSS = {"classification": "categorical_crossentropy", "regression": "mse"}


def resolve_loss(cfg: DictConfig, task: str) -> None:
    """Replace ``loss=auto`` in ``cfg`` by the loss config of the one that fits ``task``,
    as if the user had named it; any other loss stays as it is."""
    if cfg.loss.name != AUTO:
        return
    chosen = OmegaConf.load(CONF / "loss" / f"{AUTO_LOSS[task]}.yaml")
    with open_dict(cfg):
        cfg.loss = OmegaConf.merge(OmegaConf.structured(LossConfig), chosen)
