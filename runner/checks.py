"""The value checks Hydra's types cannot express, made before anything trains.

:func:`check_group_overrides` reads the command line before Hydra composes it;
:func:`validate_values` (ranges, lengths; no Keras) runs as each job starts, and
:func:`validate_names` (Keras's identifiers, asked of Keras) once its backend is set up
(:func:`runner.jobs.plan.plan`). Each refusal is a :class:`~runner.config.UserError` that
says what was wrong and what is allowed. Then the config is resolved once, into a job's
spec (runner/jobs/spec.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.activations import LAYERS, check_user, is_user
from runner.config import (
    AUTO,
    CONF,
    ModelName,
    UserError,
    hidden_count,
    layer_activations,
    per_layer,
)


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
    _check_model(cfg)
    _check_training(cfg)
    _check_dataset(cfg)


def _check_model(cfg: DictConfig) -> None:
    """The hidden layers: their widths, one activation and one initializer name or one per
    layer, the conv blocks of ``model=cnn`` only, a dropout rate."""
    model = cfg.model
    units, filters = list(model.units), list(model.filters)
    cnn = model.name is ModelName.cnn
    if not units and not (cnn and filters):
        raise UserError("model.units=[] is not allowed: give at least one hidden layer width.")
    if cnn and not filters:
        raise UserError("model.filters=[] is not allowed with model=cnn: give at least one.")
    if not cnn and (filters or model.kernel_size != 3):
        key = "model.filters" if filters else "model.kernel_size"
        raise UserError(f"{key} is set but model=mlp has no conv blocks: it applies to model=cnn.")
    for key, values in (("model.units", units), ("model.filters", filters)):
        for width in values:
            _check_positive(key, width)
    _check_positive("model.kernel_size", model.kernel_size)
    if not 0 <= model.dropout < 1:
        raise UserError(f"model.dropout={model.dropout} is not allowed: it must be in [0, 1).")
    if model.l2 < 0:
        raise UserError(f"model.l2={model.l2} is not allowed: it must be 0 or more.")
    for key, what, example in (
        ("activation", "activation", "activation=relu or activation=[relu,tanh]"),
        ("model.kernel_initializer", "initializer", "model.kernel_initializer=he_normal"),
    ):
        _check_per_layer(cfg, key, what, example)


def _check_per_layer(cfg: DictConfig, key: str, what: str, example: str) -> None:
    """A key that takes one ``what`` name, or a list of one per hidden layer."""
    value = OmegaConf.select(cfg, key)
    listed = isinstance(value, ListConfig)
    layers = hidden_count(cfg)
    if listed and len(value) != layers:
        shown = ",".join(str(v) for v in value)
        units = f"model.units={list(cfg.model.units)}"
        made = (
            f"model.filters={list(cfg.model.filters)} and {units} make"
            if cfg.model.filters
            else f"{units} has"
        )
        raise UserError(
            f"{key}={shown} names {len(value)} {what}s but {made} {layers} hidden layers: "
            f"give one {what}, or one per hidden layer."
        )
    if not all(isinstance(item, str) for item in (value if listed else [value])):
        raise UserError(
            f"{key}={value!r} is not allowed: give a Keras {what} name or a list of names, "
            f"e.g. {example}."
        )


def _check_training(cfg: DictConfig) -> None:
    """Epochs, batches, threads, the probe, early stopping, and the optimizer's rate and
    momentum."""
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
    stopping = cfg.train.early_stopping
    for key in ("patience", "min_delta"):
        if stopping[key] < 0:
            raise UserError(
                f"train.early_stopping.{key}={stopping[key]} is not allowed: it must be 0 or more."
            )
    _check_positive("optimizer.learning_rate", cfg.optimizer.learning_rate)
    _check_schedule(cfg)
    _check_clipping(cfg)
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


def _check_clipping(cfg: DictConfig) -> None:
    """Clipping by norm or by value (not both, as Keras), Nesterov's momentum for sgd only,
    and a weight decay of 0 or more."""
    optimizer = cfg.optimizer
    for key in ("clipnorm", "clipvalue"):
        if optimizer[key] is not None:
            _check_positive(f"optimizer.{key}", optimizer[key])
    if optimizer.clipnorm is not None and optimizer.clipvalue is not None:
        raise UserError(
            "optimizer.clipnorm and optimizer.clipvalue are both set: Keras clips gradients "
            "one way. Set one of them."
        )
    if optimizer.nesterov and optimizer.name != "sgd":
        raise UserError(
            f"optimizer.nesterov=true is not allowed with optimizer={optimizer.name}: it "
            "applies to optimizer=sgd."
        )
    if optimizer.weight_decay is not None and optimizer.weight_decay < 0:
        raise UserError(
            f"optimizer.weight_decay={optimizer.weight_decay} is not allowed: it must be 0 or more."
        )


def _check_schedule(cfg: DictConfig) -> None:
    """The schedule's arguments: a positive decay length, a decay rate in (0, 1], a last
    fraction in [0, 1], and a warmup that leaves epochs to decay in."""
    optimizer = cfg.optimizer
    if optimizer.decay_epochs is not None:
        _check_positive("optimizer.decay_epochs", optimizer.decay_epochs)
    if not 0 < optimizer.decay_rate <= 1:
        raise UserError(
            f"optimizer.decay_rate={optimizer.decay_rate} is not allowed: it must be in (0, 1]."
        )
    if not 0 <= optimizer.alpha <= 1:
        raise UserError(f"optimizer.alpha={optimizer.alpha} is not allowed: it must be in [0, 1].")
    warmup, epochs = optimizer.warmup_epochs, cfg.train.epochs
    if optimizer.schedule.value == "warmup_cosine" and not 0 < warmup < epochs:
        raise UserError(
            f"optimizer.warmup_epochs={warmup} is not allowed with train.epochs={epochs}: "
            "optimizer.schedule=warmup_cosine warms up for 1 to train.epochs - 1 epochs."
        )


def _check_dataset(cfg: DictConfig) -> None:
    """The splits' fractions, and enough samples left to train on."""
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
    check_fold(cfg.dataset.folds, cfg.dataset.fold)


def check_fold(folds: int | None, fold: int) -> None:
    """``dataset.folds`` unset or 2 or more, and ``dataset.fold`` one of its folds."""
    if folds is None:
        if fold != 0:
            raise UserError(
                f"dataset.fold={fold} is not allowed without dataset.folds: set dataset.folds=K "
                "(2 or more) to cut K folds, then dataset.fold is 0 to K-1."
            )
        return
    if folds < 2:
        raise UserError(
            f"dataset.folds={folds} is not allowed: give 2 or more folds, or leave it unset "
            "for one fixed validation split."
        )
    if not 0 <= fold < folds:
        raise UserError(
            f"dataset.fold={fold} is not allowed with dataset.folds={folds}: it must be an "
            f"integer from 0 to {folds - 1}."
        )


def validate_names(cfg: DictConfig) -> None:
    """Check the Keras identifiers (activations, initializers, the loss) by asking Keras,
    and import the user's activations, without building a model."""
    import keras

    names = {("activation", a) for a in layer_activations(cfg)}
    if cfg.model.output_activation != AUTO:
        names.add(("model.output_activation", cfg.model.output_activation))
    for key, name in sorted(names):
        _check_activation(key, name)
    initializers = per_layer(cfg.model.kernel_initializer, hidden_count(cfg))
    for name in sorted(set(initializers) - {AUTO}):
        try:
            keras.initializers.get(name)
        except ValueError:
            raise UserError(
                f"model.kernel_initializer={name} is not a Keras initializer. Allowed: auto "
                "(one per activation: docs/configuration.md) or a Keras initializer, for "
                "example glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal, "
                "random_normal, zeros, ones."
            ) from None
    if cfg.loss.name == AUTO:
        return
    try:
        keras.losses.get(cfg.loss.name)
    except ValueError:
        raise UserError(f"loss.name={cfg.loss.name} is not a Keras loss.") from None


def _check_activation(key: str, name: str) -> None:
    """A Keras activation, a Keras layer that is one (hidden layers only), or the user's
    function ``module:function``, imported and tried."""
    hidden = key == "activation"
    if is_user(name):
        check_user(key, name)
        return
    if name in keras_activations() or (hidden and name in LAYERS):
        return
    raise UserError(
        f"{key}={name} is not a Keras activation. Allowed: {', '.join(keras_activations())}"
        + (", " + ", ".join(LAYERS) if hidden else ", auto")
        + ", or a function of your own written with keras.ops, as module:function."
    )
