"""Composing a large sweep's job configs quickly, with Hydra's and OmegaConf's public API.

Hydra composes each job of a sweep from scratch: it reads every YAML file of the defaults
tree and merges them, which for a fused sweep of hundreds of jobs takes about as long as
their training (bench/compose_speed.py). Most jobs differ from each other only in plain
values (``seed=3``, ``activation=tanh``, ``optimizer.learning_rate=0.01``), and a sweep
rarely has more than a few distinct choices of config groups (``loss=mse``).
:class:`Composer` has Hydra compose each distinct choice of groups once, then makes each
job's config from a copy of it by setting the job's values with OmegaConf and its
``hydra.overrides`` as Hydra would. Anything but plain ``key=value`` overrides of existing
keys (``+key``, ``~key``, ``hydra.*``) goes through Hydra's own composition, and so does a
job whose values OmegaConf refuses, so that the user sees Hydra's own message.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.compat.hydra import overrides_dirname


class Composer:
    """Job configs of one sweep, each equal to what ``config_loader.load_sweep_config``
    composes for it (tests/test_compose.py holds that)."""

    def __init__(self, config_loader: Any, master: DictConfig):
        self.loader = config_loader
        self.master = master
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(config_loader.list_groups(""))
        self.bases: dict[tuple[str, ...], bytes | DictConfig] = {}

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The config of the job with ``overrides``."""
        overrides = list(overrides)
        parsed = self.parser.parse_overrides(overrides)
        if not all(self._plain(o) for o in parsed):
            return self.loader.load_sweep_config(self.master, overrides)
        choices = tuple(o.input_line for o in parsed if o.key_or_group in self.groups)
        if choices not in self.bases:
            self.bases[choices] = _kept(self.loader.load_sweep_config(self.master, list(choices)))
        config = _copy(self.bases[choices])
        settings = config.hydra.job.config.override_dirname
        dirname = overrides_dirname(
            parsed, settings.kv_sep, settings.item_sep, list(settings.exclude_keys)
        )
        if dirname is None:
            return self.loader.load_sweep_config(self.master, overrides)
        values = [o for o in parsed if o.key_or_group not in self.groups]
        try:
            for override in values:
                OmegaConf.update(config, override.key_or_group, override.value(), merge=False)
        except Exception:  # Hydra's composition says what is wrong in its own words
            return self.loader.load_sweep_config(self.master, overrides)
        with open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in parsed]
            config.hydra.job.override_dirname = dirname
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config

    def _plain(self, override: Override) -> bool:
        """A ``key=value`` override of an existing key or of a top-level config group."""
        return (
            not override.is_hydra_override()
            and not override.is_sweep_override()
            and override.package is None
            and not (override.is_add() or override.is_delete() or override.is_force_add())
            and "/" not in override.key_or_group
        )


def _kept(base: DictConfig) -> bytes | DictConfig:
    """A base config as each job's copy is made from it: pickled, since unpickling makes the
    same nodes, flags and types as ``copy.deepcopy`` in a fraction of its time
    (bench/README.md, "Planning a fused sweep's jobs"); as it is where a value will not
    pickle."""
    try:
        return pickle.dumps(base, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return base


def _copy(base: bytes | DictConfig) -> DictConfig:
    return pickle.loads(base) if isinstance(base, bytes) else copy.deepcopy(base)
