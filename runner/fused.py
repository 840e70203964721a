"""Fused sweeps: the jobs of a sweep that can share one computation train together on JAX
(runner/engine/jax.py), each still its own Keras model and its own MLflow run.

Jobs fuse when they train the same widths on the same data, for the same epochs with the
same batch size and optimizer settings: everything in their configs is equal but the keys
in :data:`PER_JOB` (learning rate included) and what does not change training
(:data:`runner.config.NOT_TRAINING`). A job that fuses with no other, or that asks for
``train.mixed_precision``, runs as the basic launcher would run it. Each job keeps its own
output directory, saved config and MLflow run.

This module groups the jobs and plans each in its own Hydra context; a group trains, and
ends on every path, as any job does (:func:`runner.lifecycle.train`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner import lifecycle, stop
from runner.config import training_key
from runner.sweep import sweep_of

if TYPE_CHECKING:
    from runner.job import Plan

log = logging.getLogger("runner")

# What may differ between the jobs of one fused group: each model's own.
PER_JOB = (
    "activation",
    "seed",
    "loss",
    "model.output_activation",
    "model.kernel_initializer",
    "optimizer.learning_rate",
)


def group_key(cfg: DictConfig) -> str:
    """Equal for two jobs that can train in one fused batch."""
    return training_key(cfg, PER_JOB)


def fusable_groups(cfgs: Sequence[DictConfig], max_group: int) -> list[list[int]]:
    """The jobs' indices in groups of equal :func:`group_key`, at most ``max_group`` each,
    in the order the groups' first jobs come."""
    by_key: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        # Loss scaling is a per-batch decision of its optimizer: a mixed-precision job
        # trains alone, as it would.
        key = str(index) if cfg.train.mixed_precision else group_key(cfg)
        by_key.setdefault(key, []).append(index)
    return [
        indices[start : start + max_group]
        for indices in by_key.values()
        for start in range(0, len(indices), max_group)
    ]


def _plan_task(cfg: DictConfig) -> Plan | None:
    """The task function of a fused job's first phase, run in the job's own Hydra context
    (output directory, saved config, log file): check it as a single job is checked
    (:func:`runner.lifecycle.plan`). A refused job is recorded FAILED and gives None."""
    stop.install()
    sweep = sweep_of(HydraConfig.get())
    try:
        return lifecycle.plan(cfg, sweep)
    except KeyboardInterrupt:
        lifecycle.interrupted(cfg, sweep)


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """The fused launcher's ``launch``: compose every job's config, group them, then run
    each group fused and each job left alone as the basic launcher does."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    from runner.compose import Composer

    composer = Composer(launcher.hydra_context.config_loader, launcher.config)
    configs = []
    for offset, overrides in enumerate(job_overrides):
        # The composing sweeper hands over the configs it composed to check the batch.
        config = launcher.composed.pop(tuple(overrides), None) or composer.compose(overrides)
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = initial_job_idx + offset
        configs.append(config)
    groups = fusable_groups(configs, launcher.max_group)
    alone = sum(len(group) == 1 for group in groups)
    log.info(
        "Launching %d jobs: %d fused group(s) of %s, %d alone",
        len(configs),
        len(groups) - alone,
        ", ".join(str(len(group)) for group in groups if len(group) > 1) or "none",
        alone,
    )
    returns: list[JobReturn | None] = [None] * len(configs)
    for number, group in enumerate(groups):
        if len(group) == 1:
            returns[group[0]] = _run(launcher, configs[group[0]], launcher.task_function)
        else:
            phase = [_plan_in_job_dir(launcher, configs[index]) for index in group]
            _train(phase, f"g{number}")
            for index, ret in zip(group, phase, strict=True):
                returns[index] = ret
        configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return returns


def _run(launcher: Any, config: DictConfig, task: Any) -> JobReturn:
    return run_job(
        hydra_context=launcher.hydra_context,
        task_function=task,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _plan_in_job_dir(launcher: Any, config: DictConfig) -> JobReturn:
    """A fused job's first phase: :func:`_plan_task` in the job's own Hydra context, as
    Hydra's ``run_job`` runs a task, less what planning does not need of it.

    The job gets its output directory with its config and overrides saved in ``.hydra/``
    (the sweep's ``multirun.yaml`` holds Hydra's own config), and ``HydraConfig`` is set
    while it is planned. ``run_job`` also deep-copies the whole config twice, saves the
    Hydra config and sets up a log file per job: a tenth of a second a job, of which a
    fused job, whose training the group logs as one, needs none."""
    HydraConfig.instance().set_config(config)
    subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
    output_dir = Path(str(config.hydra.sweep.dir), subdir).absolute()
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(config)
    task_cfg = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    overrides = list(config.hydra.overrides.task)
    saved = output_dir / str(config.hydra.output_subdir or ".hydra")
    saved.mkdir(parents=True, exist_ok=True)
    (saved / "config.yaml").write_text(OmegaConf.to_yaml(task_cfg))
    (saved / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    ret = JobReturn(overrides=overrides, cfg=task_cfg, hydra_cfg=HydraConfig.instance().cfg)
    ret.working_dir = os.getcwd()
    callbacks = launcher.hydra_context.callbacks
    callbacks.on_job_start(config=config, task_function=_plan_task)
    try:
        ret.return_value = _plan_task(task_cfg)
        ret.status = JobStatus.COMPLETED
    except Exception as error:
        ret.return_value = error
        ret.status = JobStatus.FAILED
    ret.task_name = str(config.hydra.job.name)
    callbacks.on_job_end(config=config, job_return=ret)
    return ret


def _train(phase: list[JobReturn], group: str) -> None:
    """Train the planned jobs of one group (:func:`runner.lifecycle.train`), then set each
    job's return value as the basic launcher's task function sets it."""
    rets = [ret for ret in phase if ret.status is JobStatus.COMPLETED]
    planned = [ret for ret in rets if ret.return_value is not None]
    if planned:
        metrics = lifecycle.train([ret.return_value for ret in planned], group)
        for ret, value in zip(planned, metrics, strict=True):
            ret.return_value = value
    for ret in rets:
        ret.return_value = lifecycle.result(ret.cfg, ret.return_value)
