"""Hydra's internals: its copies of the ConfigStore, a composed job's ``override_dirname``,
and the grid sweeper that the composing sweeper builds on."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class

from runner.compat import written_for

HYDRA = ("1.3",)


def config_store_copies_as_itself() -> None:
    """Make the process's ConfigStore copy as itself.

    Hydra 1.3 deep-copies its config repository for every composition and every group it
    lists, and with it the ConfigStore that the repository holds, every plugin's config
    included: ``--help`` made 82 copies and a sweep one per job. The copies are only read,
    and Hydra's later fix (pull request 2928) has them use the live store in the same way.
    Fallback: Hydra's own copies."""
    if not written_for("hydra-core", HYDRA, "the ConfigStore copy patch"):
        return
    ConfigStore.__deepcopy__ = _itself


def _itself(store: object, memo: dict) -> object:
    return store


def overrides_dirname(
    overrides: list, kv_sep: str, item_sep: str, exclude_keys: list[str]
) -> str | None:
    """``hydra.job.override_dirname`` for a job's parsed overrides, as Hydra computes it when
    it composes a job (runner/compose.py sets it on a job composed without Hydra). Hydra
    exposes no public function for it. Fallback: None, and the job is composed by Hydra."""
    if not written_for("hydra-core", HYDRA, "the override_dirname of quickly composed jobs"):
        return None
    from hydra._internal.config_loader_impl import get_overrides_dirname

    task = [o for o in overrides if not o.is_hydra_override()]
    return get_overrides_dirname(
        overrides=task, kv_sep=kv_sep, item_sep=item_sep, exclude_keys=exclude_keys
    )


def grid_sweeper() -> tuple[type, bool]:
    """Hydra's grid sweeper class, and whether a subclass may compose its jobs itself.

    The class has no public import path; Hydra's own ``hydra/sweeper=basic`` config names
    it. Fallback: the class that config names, found through the ConfigStore, sweeping as
    Hydra does (False: its own composition of each job)."""
    if written_for("hydra-core", HYDRA, "the composing sweeper's quick composition"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        return BasicSweeper, True
    node: Any = ConfigStore.instance().load("hydra/sweeper/basic.yaml").node
    return get_class(node._target_), False
