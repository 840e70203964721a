"""What identifies a job: its config as plain data (:func:`config_view`, what its run
records, password masked), the canonical JSON that its fingerprint digests
(:func:`training_key`), and what a fused group's jobs must share (:func:`fusion_key`): all
but each member's own keys (:data:`PER_MEMBER`) and the keys that do not change training.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.config import not_training
from runner.tracking.store import masked

# Keys the schema gained after runs were first recorded, each with the value that trains
# as before it existed: left out of a job's fingerprint at that value, so that a config
# written before them keeps its fingerprint, and resume=true finds its runs.
ADDED = {
    "model.name": "mlp",
    "model.filters": [],
    "model.kernel_size": 3,
    "model.normalization": "none",
    "model.normalization_position": "before",
    "model.dropout": 0.0,
    "model.dropout_kind": "dropout",
    "dataset.folds": None,
    "dataset.fold": 0,
    "optimizer.schedule": "constant",
    "optimizer.decay_epochs": None,
    "optimizer.decay_rate": 0.1,
    "optimizer.alpha": 0.0,
    "optimizer.warmup_epochs": 1,
    "optimizer.clipnorm": None,
    "optimizer.clipvalue": None,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": None,
    "model.l2": 0.0,
    "train.early_stopping": {
        "enabled": False,
        "monitor": "val_loss",
        "patience": 5,
        "min_delta": 0.0,
        "restore_best": False,
    },
}

# What may differ between the jobs of one fused group: each model's own.
PER_MEMBER = (
    "activation",
    "seed",
    "loss",
    "model.output_activation",
    "model.kernel_initializer",
    "optimizer.learning_rate",
    "train.early_stopping",
    "optimizer.clipnorm",
    "optimizer.clipvalue",
    "optimizer.nesterov",
    "optimizer.weight_decay",
    "model.l2",
)


def plain(value: Any) -> Any:
    """A config value, resolved, as plain data with enums as their names: what is hashed,
    logged and compared, never OmegaConf's nodes."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    return value.name if isinstance(value, Enum) else value


def training_key(view: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """A job's resolved config ``view`` (plain data, without Hydra's node) as canonical
    JSON, without the keys that do not change what it trains
    (:func:`runner.config.not_training`), the keys of :data:`ADDED` at their first value,
    and the dotted keys in ``drop``: what a job's fingerprint digests and a fused group's
    jobs share."""
    view = json.loads(json.dumps(view, default=str))
    dropped = (*not_training(), *drop)
    for dotted in (*dropped, *ADDED):
        *parents, leaf = dotted.split(".")
        node = view
        for parent in parents:
            node = node.get(parent, {})
        if dotted in dropped or node.get(leaf) == ADDED[dotted]:
            node.pop(leaf, None)
    return json.dumps(view, sort_keys=True, default=str)


def masked_override(text: str) -> str:
    """A command-line override as a run records it: ``tracking.uri``'s password masked."""
    key, equals, value = text.partition("=")
    if key.lstrip("+~") != "tracking.uri" or not equals:
        return text
    uri = value.replace("\\", "")  # Hydra's escapes, such as http\://
    return text if masked(uri) == uri else f"{key}={masked(uri)}"


def config_view(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as plain data, without Hydra's node, which is left unresolved: it
    refers to a job directory not made yet."""
    view = {key: plain(value) for key, value in cfg.items() if key != "hydra"}
    # What a run records of its config must not hold the store's password.
    if isinstance(view.get("tracking"), dict) and view["tracking"].get("uri"):
        view["tracking"]["uri"] = masked(view["tracking"]["uri"])
    return view


def flat_params(view: dict[str, Any], choices: dict[str, object]) -> dict[str, object]:
    """The config ``view`` as dotted keys, plus the ``choices`` a user compares by name."""
    flat: dict[str, object] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(view, "")
    flat.update(choices)
    return flat


def fusion_key(cfg: DictConfig) -> str:
    """Equal for two jobs that can train in one fused group: all is equal but each
    member's own keys (:data:`PER_MEMBER`) and what does not change training. Loss
    scaling is a per-batch decision of its optimizer: a mixed-precision job trains alone,
    as it would, under a key of its own."""
    if cfg.train.mixed_precision:
        return f"mixed precision {id(cfg)}"
    return training_key(config_view(cfg), PER_MEMBER)
