"""The typed schema of the configuration and the checks Hydra's types cannot express.

The dataclasses are registered in Hydra's ConfigStore as ``schema`` and named first in
``conf/config.yaml``'s defaults, so a value of the wrong type (``train.epochs=abc``) or an
unknown key fails while Hydra composes the config, before Keras is imported. The value
checks, :func:`validate_values` (ranges, lengths) and :func:`validate_names` (Keras's
identifiers), run at the start of each job.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
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
    # Typed Any because OmegaConf cannot express "str or list of str"; validate_values()
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


def check_group_overrides(overrides: list[str]) -> None:
    """Refuse a config group given something other than option names (``loss=0``,
    ``loss=[0]``), which Hydra 1.3 reports with a traceback instead of a message. Overrides
    that do not parse are left to Hydra, which reports those cleanly."""
    groups = {p.name: p for p in CONF.iterdir() if p.is_dir()}
    try:
        parsed = OverridesParser.create().parse_overrides(
            [o for o in overrides if "=" in o and not o.startswith("-")]
        )
    except OverrideParseException:
        return
    for override in parsed:
        if override.key_or_group not in groups or override.package is not None:
            continue
        values = (
            list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        )
        if not all(isinstance(value, str) for value in values):
            options = sorted(p.stem for p in groups[override.key_or_group].glob("*.yaml"))
            raise UserError(
                f"{override.input_line} is not allowed: {override.key_or_group} takes the name "
                f"of an option. Allowed: {', '.join(options)}."
            )


NOT_ACTIVATIONS = {"get", "serialize", "deserialize"}


def keras_activations() -> list[str]:
    """The activation identifiers Keras accepts, read from Keras itself."""
    import keras

    return sorted(
        name
        for name in dir(keras.activations)
        if not name.startswith("_")
        and name not in NOT_ACTIVATIONS
        and callable(getattr(keras.activations, name))
    )


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


# Far past any training this runner is for: a larger count is a typo, refused before it
# runs for days.
MAX_EPOCHS = 10**7
# What numpy's and scikit-learn's generators take as a seed.
MAX_SEED = 2**32 - 1


def _check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key}={value} is not allowed: it must be a positive number.")


def _floats(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float of the config with its dotted key, ``model.units[0]`` in a list."""
    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, value in items:
        dotted = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, DictConfig | ListConfig):
            yield from _floats(value, f"{dotted}.")
        elif isinstance(value, float):
            yield dotted, value


def validate_values(cfg: DictConfig) -> None:
    """Check ranges (every float finite), lengths and shapes; needs no TensorFlow."""
    # NaN and infinity slip through the checks below that refuse only `value <= 0`.
    for key, value in _floats(cfg):
        if not math.isfinite(value):
            raise UserError(f"{key}={value} is not allowed: it must be a finite number.")
    for key in ("seed", "dataset.seed"):
        seed = OmegaConf.select(cfg, key)
        if not 0 <= seed <= MAX_SEED:
            raise UserError(
                f"{key}={seed} is not allowed: it must be an integer from 0 to {MAX_SEED} "
                "(2**32 - 1)."
            )
    units = list(cfg.model.units)
    if not units:
        raise UserError("model.units=[] is not allowed: give at least one hidden layer width.")
    for width in units:
        _check_positive("model.units", width)
    _check_positive("train.epochs", cfg.train.epochs)
    if cfg.train.epochs > MAX_EPOCHS:
        raise UserError(
            f"train.epochs={cfg.train.epochs} is not allowed: it must be from 1 to "
            f"{MAX_EPOCHS} (10**7)."
        )
    _check_positive("train.batch_size", cfg.train.batch_size)
    _check_positive("train.steps_per_execution", cfg.train.steps_per_execution)
    _check_positive("diagnostics.probe_size", cfg.diagnostics.probe_size)
    if cfg.train.threads is not None:
        _check_positive("train.threads", cfg.train.threads)
    _check_positive("optimizer.learning_rate", cfg.optimizer.learning_rate)
    if cfg.optimizer.momentum is not None:
        if cfg.optimizer.name not in ("sgd", "rmsprop"):
            raise UserError(
                f"optimizer.momentum is set but optimizer={cfg.optimizer.name} has no momentum; "
                "it applies to optimizer=sgd and optimizer=rmsprop."
            )
        if not 0 <= cfg.optimizer.momentum < 1:
            raise UserError(
                f"optimizer.momentum={cfg.optimizer.momentum} is not allowed: it must be in [0, 1)."
            )
    for key in ("test_size", "val_size"):
        fraction = cfg.dataset[key]
        if not 0 < fraction < 1:
            raise UserError(f"dataset.{key}={fraction} is not allowed: it must be in (0, 1).")
    if cfg.dataset.subsample is not None and cfg.dataset.subsample < 10:
        raise UserError(
            f"dataset.subsample={cfg.dataset.subsample} is not allowed: give at least 10 "
            "samples, or null for all of them."
        )
    if cfg.dataset.test_size + cfg.dataset.val_size >= 1:
        raise UserError(
            f"dataset.test_size + dataset.val_size = "
            f"{cfg.dataset.test_size + cfg.dataset.val_size} leaves no training data: "
            "their sum must be below 1."
        )

    per_layer = per_layer_activations(cfg)
    if per_layer is not None and len(per_layer) != len(units):
        raise UserError(
            f"activation={activation_label(cfg)} names {len(per_layer)} activations but "
            f"model.units={units} has {len(units)} hidden layers: give one activation, "
            "or one per hidden layer."
        )
    for item in [cfg.activation] if per_layer is None else per_layer:
        if not isinstance(item, str):
            raise UserError(
                f"activation={cfg.activation!r} is not allowed: give a Keras activation name "
                "or a list of names, e.g. activation=relu or activation=[relu,tanh]."
            )


def validate_names(cfg: DictConfig) -> None:
    """Check the Keras identifiers (activations, initializer) by asking Keras, without
    building a model."""
    import keras

    allowed = keras_activations()
    names = {("activation", a) for a in hidden_activations(cfg)}
    if cfg.model.output_activation != "auto":
        names.add(("model.output_activation", cfg.model.output_activation))
    for key, name in sorted(names):
        if name not in allowed:
            raise UserError(
                f"{key}={name} is not a Keras activation. Allowed: {', '.join(allowed)}"
                + (", auto" if key == "model.output_activation" else "")
                + "."
            )
    try:
        keras.initializers.get(cfg.model.kernel_initializer)
    except ValueError:
        raise UserError(
            f"model.kernel_initializer={cfg.model.kernel_initializer} is not a Keras "
            "initializer. Allowed, for example: glorot_uniform, glorot_normal, he_uniform, "
            "he_normal, lecun_normal, random_normal, zeros, ones."
        ) from None
    if cfg.loss.name == AUTO:
        return
    try:
        keras.losses.get(cfg.loss.name)
    except ValueError:
        raise UserError(f"loss.name={cfg.loss.name} is not a Keras loss.") from None


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
