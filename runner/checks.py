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

from runner.config import AUTO, CONF, UserError, activation_label, layer_activations


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
    """The hidden layers' widths, and one activation name or one per layer."""
    units = list(cfg.model.units)
    if not units:
        raise UserError("model.units=[] is not allowed: give at least one hidden layer width.")
    for width in units:
        _check_positive("model.units", width)
    per_layer = isinstance(cfg.activation, ListConfig)
    if per_layer and len(cfg.activation) != len(units):
        raise UserError(
            f"activation={activation_label(cfg)} names {len(cfg.activation)} activations but "
            f"model.units={units} has {len(units)} hidden layers: give one activation, "
            "or one per hidden layer."
        )
    for item in cfg.activation if per_layer else [cfg.activation]:
        if not isinstance(item, str):
            raise UserError(
                f"activation={cfg.activation!r} is not allowed: give a Keras activation name "
                "or a list of names, e.g. activation=relu or activation=[relu,tanh]."
            )


def _check_training(cfg: DictConfig) -> None:
    """Epochs, batches, threads, the probe, and the optimizer's rate and momentum."""
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


def validate_names(cfg: DictConfig) -> None:
    """Check the Keras identifiers (activations, initializer) by asking Keras, without
    building a model."""
    import keras

    allowed = keras_activations()
    names = {("activation", a) for a in layer_activations(cfg)}
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
