"""Hydra's internals: its copies of the ConfigStore, a composed job's ``override_dirname``,
the grid sweeper that the composing sweeper builds on, and ``run_job`` without its copies
for the fused launcher's jobs."""

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


def run_job(hydra_context: Any, task_function: Any, config: Any, dir_key: str, subdir_key: str):
    """Hydra's ``run_job`` for a fused job, without its copies of the config's Hydra node.

    Hydra 1.3's ``run_job`` copies that node, most of the config, four times a job: two
    ``HydraConfig.set_config``, a deep copy of the whole config whose copy of the node it
    deletes, and a deep copy of ``HydraConfig``'s own copy: a large share of each job's
    planning in a sweep of thousands (bench/README.md). Here the node is not copied: the
    job's config is its own (each job of a fused sweep is composed apart), so
    ``HydraConfig`` holds the config's own node, as ``set_config`` makes it read-only and
    types it (:func:`_set_config`; its output directory then set in that one node, which is
    what the second ``set_config`` made), the job's config is copied without it, and the
    job's return holds ``HydraConfig``'s config, made for this job alone. All else is
    Hydra's, step by step: the job's directory, its saved configs (their text written
    faster: :func:`_save_config`) and log file, ``chdir``, ``env_set`` and the callbacks.
    Fallback: Hydra's own ``run_job``."""
    from hydra.core.utils import run_job as hydra_run_job
    from hydra.version import base_at_least

    # Before version_base 1.2 a job without hydra.job.chdir changes directory, with
    # Hydra's warning: its own run_job says it.
    legacy = config.hydra.job.chdir is None and not base_at_least("1.2")
    if legacy or not written_for("hydra-core", HYDRA, "the fused jobs' run_job"):
        return hydra_run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key=dir_key,
            job_subdir_key=subdir_key,
        )
    import os
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import (
        JobReturn,
        JobRuntime,
        JobStatus,
        _flush_loggers,
        configure_log,
        env_override,
    )
    from omegaconf import OmegaConf, open_dict, read_write

    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()
    orig_hydra_cfg = HydraConfig.instance().cfg
    hydra_cfg = HydraConfig.instance().cfg = _set_config(config)
    output_dir = str(OmegaConf.select(config, dir_key))
    output_dir = os.path.join(output_dir, str(OmegaConf.select(config, subdir_key)))
    # One node: the config's is the one HydraConfig holds (_set_config).
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    chdir = None
    try:
        ret = JobReturn()
        task_cfg = _without_hydra(config)
        ret.cfg = task_cfg
        ret.hydra_cfg = hydra_cfg
        ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        chdir = bool(hydra_cfg.hydra.job.chdir)
        if chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            saved = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
            _save_config(task_cfg, "config.yaml", saved)
            _save_config(hydra_cfg, "hydra.yaml", saved)
            _save_config(config.hydra.overrides.task, "overrides.yaml", saved)
        with env_override(hydra_cfg.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as error:
                ret.return_value = error
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        HydraConfig.instance().cfg = orig_hydra_cfg
        if chdir:
            os.chdir(old_cwd)


def _set_config(config: Any) -> Any:
    """What ``HydraConfig.set_config(config)`` makes ``HydraConfig``'s config: the Hydra node
    alone, read-only, its parent ``config`` (so that the node's interpolations read the
    job's config); here the node itself, not a copy (``masked_copy`` copies it: 6 ms a
    job, bench/README.md)."""
    from hydra.conf import HydraConf
    from omegaconf import DictConfig, OmegaConf, flag_override

    node = config.hydra
    OmegaConf.set_readonly(node, True)
    typed = OmegaConf.get_type(config, "hydra")
    assert typed is not None and issubclass(typed, HydraConf)
    hydra_cfg = DictConfig({})
    with flag_override(hydra_cfg, "no_deepcopy_set_nodes", True):
        hydra_cfg["hydra"] = node
    node._set_parent(config)
    return hydra_cfg


def _save_config(cfg: Any, filename: str, output_dir: Any) -> None:
    """Hydra's ``_save_config``: the same file, its text written by libyaml where that
    writes the same (runner/compat/omegaconf.py)."""
    from runner.compat.omegaconf import to_yaml

    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / filename, "w", encoding="utf-8") as file:
        file.write(to_yaml(cfg))


def _without_hydra(config: Any) -> Any:
    """A deep copy of ``config`` without its Hydra node, which is not copied: the memo
    hands deepcopy the node itself as its copy, dropped at once (Hydra copies it, then
    deletes the copy)."""
    import copy

    from omegaconf import open_dict, read_write

    node = config._get_node("hydra")
    task_cfg = copy.deepcopy(config, memo={id(node): node})
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    # deepcopy gave the node to the copy for a moment; it is the config's.
    node._set_parent(config)
    return task_cfg
