"""The typed schema of the configuration, with every default, and what a job reads from it.

The dataclasses are registered in Hydra's ConfigStore as ``schema`` and named first in
``conf/config.yaml``'s defaults, so a value of the wrong type (``train.epochs=abc``) or an
unknown key fails while Hydra composes the config, before Keras is imported. The checks
Hydra's types cannot express (ranges, lengths, Keras's identifiers) are in runner/checks.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from runner.compat.hydra import config_store_copies_as_itself

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


# A key marked so does not change what a job trains (see :func:`not_training`).
TRAINS_NOT = {"trains": False}


class Task(str, Enum):
    """What a dataset's targets are: class labels, or continuous values."""

    classification = "classification"
    regression = "regression"

    def __str__(self) -> str:
        return self.value


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


class ScheduleName(Enum):
    """``optimizer.schedule``: how the learning rate changes as a job trains, by Keras's
    schedules (keras.optimizers.schedules)."""

    constant = "constant"
    cosine = "cosine"
    step = "step"
    exponential = "exponential"
    warmup_cosine = "warmup_cosine"


@dataclass
class OptimizerConfig:
    """A Keras optimizer by identifier, at the learning rate its YAML in conf/optimizer/
    sets; ``momentum`` applies to sgd and rmsprop only. The schedule's keys, in epochs,
    apply to the schedules that name them (docs/configuration.md)."""

    name: str = MISSING
    learning_rate: float = MISSING
    momentum: float | None = None
    schedule: ScheduleName = ScheduleName.constant
    # cosine, warmup_cosine: the epochs the cosine decays over (after the warmup); step and
    # exponential: the epochs over which the rate is multiplied by decay_rate. null: the
    # rest of the training (step: a third of it).
    decay_epochs: int | None = None
    decay_rate: float = 0.1
    # cosine, warmup_cosine: the last rate, as a fraction of learning_rate.
    alpha: float = 0.0
    warmup_epochs: int = 1
    # Keras's gradient clipping, by each gradient's norm or by value (one of them, or none).
    clipnorm: float | None = None
    clipvalue: float | None = None
    # sgd: Nesterov's momentum.
    nesterov: bool = False
    # Keras's decoupled weight decay (adamw's YAML sets 0.004, Keras's default for it).
    weight_decay: float | None = None


class Scale(Enum):
    standard = "standard"
    minmax = "minmax"
    none = "none"


class Objective(Enum):
    """A validation metric: what a search (``hparams_search``) optimises at the last epoch,
    and what early stopping watches. Never a test metric, so that the test split stays
    unseen until the final comparison."""

    val_loss = "val_loss"
    val_accuracy = "val_accuracy"
    val_mae = "val_mae"
    val_rmse = "val_rmse"


class TaskChoice(Enum):
    """``dataset.task``: inferred from the targets (auto), or one :class:`Task`."""

    auto = "auto"
    classification = "classification"
    regression = "regression"


@dataclass
class DatasetConfig:
    """A registered dataset and how it is cut: ``test_size`` and ``val_size`` are fractions
    of all samples; ``seed`` fixes the data itself (the synthetic samples, the subsample,
    the split), apart from the training ``seed``, so that every training seed sees the
    same data. ``folds`` (unset: one fixed validation split of ``val_size``) cuts what the
    test split leaves into that many folds, of which ``fold`` is the validation part. The
    other keys apply to the datasets that name them in their YAML."""

    name: str = MISSING
    test_size: float = 0.2
    val_size: float = 0.2
    seed: int = 0
    folds: int | None = None
    fold: int = 0
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


class ModelName(Enum):
    """``model``: a multilayer perceptron, or a convolutional network for image datasets."""

    mlp = "mlp"
    cnn = "cnn"


class Normalization(Enum):
    """What normalizes each hidden layer's output: nothing, Keras's BatchNormalization or
    LayerNormalization."""

    none = "none"
    batch = "batch"
    layer = "layer"


class Position(Enum):
    """Where a hidden layer's normalization sits: before its activation, or after it."""

    before = "before"
    after = "after"


class DropoutKind(Enum):
    """Keras's Dropout, or AlphaDropout, which keeps a SELU network's mean and variance."""

    dropout = "dropout"
    alpha_dropout = "alpha_dropout"


@dataclass
class ModelConfig:
    """The hidden layers (``cnn``: a Conv2D block per entry of ``filters``, then a Dense
    layer per entry of ``units``; ``mlp``: the Dense layers only) and the output layer. Each
    hidden layer: its kernel, its normalization before or after its activation, and dropout
    at its end (after the pooling of a conv block)."""

    name: ModelName = ModelName.mlp
    units: list[int] = field(default_factory=lambda: [64, 64])
    # cnn: each block is Conv2D(filters[i], kernel_size, padding="same"), then its
    # activation and a 2x2 max pooling.
    filters: list[int] = field(default_factory=list)
    kernel_size: int = 3
    # auto: the output activation that goes with the loss and the task (see conf/loss/).
    output_activation: str = "auto"
    # A Keras initializer for every kernel, a list with one per hidden layer, or auto (one
    # that suits each layer's activation, runner/model.py's AUTO_INITIALIZERS). Typed Any:
    # "str or list of str", checked in runner/checks.py.
    kernel_initializer: Any = "glorot_uniform"
    normalization: Normalization = Normalization.none
    normalization_position: Position = Position.before
    # The rate of dropout after every hidden layer; 0: none.
    dropout: float = 0.0
    dropout_kind: DropoutKind = DropoutKind.dropout
    # The L2 penalty on every kernel (Keras's L2 kernel_regularizer), output layer included;
    # 0: none.
    l2: float = 0.0


@dataclass
class EarlyStoppingConfig:
    """Keras's EarlyStopping: a job stops once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs; ``restore_best``: its test metrics (and logged
    model) are those of the weights of its best epoch. In a fused group each member
    stops on its own."""

    enabled: bool = False
    monitor: Objective = Objective.val_loss
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = False


@dataclass
class TrainConfig:
    """``steps_per_execution`` batches run in one TensorFlow call: fewer round trips from
    Python, the same updates (JAX runs a whole epoch in one call)."""

    epochs: int = 20
    batch_size: int = 32
    steps_per_execution: int = 64
    # CPU threads per job; null: all cores, or a share of them per worker when a parallel
    # launcher runs several jobs at once (runner/sweep.py). TensorFlow takes any count;
    # JAX's XLA either one thread (threads=1) or all cores.
    threads: int | None = field(default=None, metadata=TRAINS_NOT)
    # Hidden layers compute in float16 (weights stay float32), the output layer and the loss
    # in float32, with loss scaling: Keras's mixed_float16, set per layer (runner/model.py).
    # For GPUs: on a CPU it runs, with a warning, but is no faster.
    mixed_precision: bool = False
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class DiagnosticsConfig:
    """Per-layer gradient norms, median activations and dead or saturated units
    (``grad_norm/hidden_i``, ``median_activation/hidden_i``, ``dead_fraction/hidden_i``,
    ``saturated_fraction/hidden_i``), measured at each epoch's end on ``probe_size``
    training samples (names in runner/metrics.py; each engine measures them with its
    backend's gradients)."""

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
    and ``model`` are config groups, filled by conf/config.yaml's defaults list."""

    dataset: DatasetConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    # One activation for every hidden layer, or a list with one per layer: [relu,tanh]. A
    # Keras activation, prelu (Keras's PReLU layer), or a function of your own,
    # module:function. Typed Any because OmegaConf cannot express "str or list of str";
    # runner/checks.py checks it.
    activation: Any = "relu"
    model: ModelConfig = MISSING
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
    resume: bool = field(default=False, metadata=TRAINS_NOT)
    # null: a job returns its metrics. A metric: a job returns its last-epoch value, for a
    # search to optimise (the worst value, inf or -inf, when the job diverged or failed).
    objective: Objective | None = field(default=None, metadata=TRAINS_NOT)
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata=TRAINS_NOT)


def register() -> None:
    """Register the schema so that ``conf/config.yaml`` can name it in its defaults, and
    spare Hydra its copies of the ConfigStore (runner/compat/hydra.py)."""
    config_store_copies_as_itself()
    ConfigStore.instance().store(name="schema", node=Config)


def not_training(schema: type = Config, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys that the schema marks :data:`TRAINS_NOT`: where a job is recorded,
    whether it may be skipped, what it returns to a search, and how many threads compute
    it. A job's fingerprint leaves them out, jobs that differ only in them train as one
    fused group, and a comparison never groups runs by them."""
    keys: list[str] = []
    hints = get_type_hints(schema)
    for item in fields(schema):
        if item.metadata.get("trains", True) is False:
            keys.append(f"{prefix}{item.name}")
        elif is_dataclass(hints[item.name]):
            keys += not_training(hints[item.name], f"{prefix}{item.name}.")
    return tuple(keys)


# ``loss=auto``, ``model.output_activation=auto``: what fits the task.
AUTO = "auto"


def hidden_count(cfg: DictConfig) -> int:
    """How many hidden layers the model has: its conv blocks and its Dense layers."""
    return len(cfg.model.filters) + len(cfg.model.units)


def per_layer(value: Any, layers: int) -> tuple[str, ...]:
    """A key that takes one name or a list of one per hidden layer (``activation``,
    ``model.kernel_initializer``), as one name per layer."""
    if isinstance(value, ListConfig | list | tuple):
        return tuple(str(a) for a in value)
    return (str(value),) * layers


def layer_activations(cfg: DictConfig) -> tuple[str, ...]:
    """``activation`` as one name per hidden layer: the list as it is, or the one name
    repeated for every layer."""
    return per_layer(cfg.activation, hidden_count(cfg))


def activation_label(cfg: DictConfig) -> str:
    """``activation`` as the user gave it: ``relu``, or ``relu,tanh,sigmoid`` for a list."""
    return ",".join(per_layer(cfg.activation, 1))


def losses_by_encoding() -> dict[Encoding, tuple[str, ...]]:
    """The losses of the config group ``loss`` (conf/loss/*.yaml) by the target encoding
    they take on either task: what a program that switches between losses offers."""
    found: dict[Encoding, list[str]] = {encoding: [] for encoding in Encoding}
    for path in sorted((CONF / "loss").glob("*.yaml")):
        loss = OmegaConf.merge(OmegaConf.structured(LossConfig), OmegaConf.load(path))
        for head in (loss.classification, loss.regression):
            if head is not None and loss.name not in found[head.encoding]:
                found[head.encoding].append(loss.name)
    return {encoding: tuple(names) for encoding, names in found.items()}
