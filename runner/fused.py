"""Fused sweeps: the jobs of a sweep that can share one computation train together on JAX
(runner/engine/jax_engine.py), each still its own Keras model and its own MLflow run.

Jobs fuse when they train the same widths on the same data, for the same epochs with the
same batch size and optimizer: everything in their specs is equal but each member's own
values, learning rate included, and what does not change training
(:func:`runner.jobs.keys.fusion_key`). A job that fuses with no other, or that asks for
``train.mixed_precision``, runs as the basic launcher would run it. Each job keeps its own
output directory, saved config, log file and MLflow run.

This module groups the jobs, and plans each in its own Hydra context, as the basic
launcher runs a job with Hydra's ``run_job`` (:func:`runner.compat.hydra.run_job`: the
same, without its copies of the Hydra node); a group then trains, and ends on every path,
as any job does (:func:`runner.jobs.outcome.run_plans`). Training happens after each job's
context has closed: in the sweep's working directory, without the job's ``env_set``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import stop
from runner.compat.hydra import run_job
from runner.compose import Composer
from runner.jobs import outcome
from runner.jobs.keys import PER_MEMBER, fusion_key, plain
from runner.jobs.plan import Plan
from runner.jobs.spec import JobContext, JobRef
from runner.sweep import GRID_SWEEPERS, sweeper_name

log = logging.getLogger("runner")


def fusable_groups(cfgs: Sequence[DictConfig], max_group: int) -> list[list[int]]:
    """The jobs' indices in groups of equal :func:`fusion_key`, at most ``max_group``
    each, in the order the groups' first jobs come. A key with more jobs than one group
    takes is dealt into as few groups as hold them, the jobs of each condition (the same
    own values but the seed: :func:`condition`) spread evenly over them. The groups then
    hold the same families of about the same sizes, which one compiled program serves
    once padded (:func:`runner.engine.families.bucket`); and where a condition has as many
    seeds as there are groups, each group trained holds every condition of the sweep."""
    by_key: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        by_key.setdefault(fusion_key(cfg), []).append(index)
    groups = []
    for indices in by_key.values():
        count = -(-len(indices) // max_group)
        by_condition: dict[str, list[int]] = {}
        for index in indices:
            by_condition.setdefault(condition(cfgs[index]), []).append(index)
        dealt = [index for same in by_condition.values() for index in same]
        groups += [sorted(dealt[start::count]) for start in range(count)]
    return groups


def condition(cfg: DictConfig) -> str:
    """What a job of a fused group is among the others: its own values (:data:`PER_MEMBER`)
    but its seed."""
    own = {key: plain(OmegaConf.select(cfg, key)) for key in PER_MEMBER if key != "seed"}
    return json.dumps(own, sort_keys=True, default=str)


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """The fused launcher's ``launch``: compose every job's config, group them, then run
    each group fused and each job left alone as the basic launcher does."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    composer = Composer(launcher.hydra_context.config_loader, launcher.config)
    configs = []
    for offset, overrides in enumerate(job_overrides):
        config = launcher.composed.pop(tuple(overrides), None) or composer.compose(overrides)
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = initial_job_idx + offset
        configs.append(config)
    groups = fusable_groups(configs, launcher.max_group)
    basic = _basic_path(launcher, configs)
    if basic is not None:
        groups = [[index] for index in range(len(configs))]
        if not launcher.said_basic:
            log.info("%s: each job runs as Hydra's basic launcher runs it", basic)
            launcher.said_basic = True
    else:
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
            config = configs[group[0]]
            log.info("\t#%d : %s", config.hydra.job.num, " ".join(config.hydra.overrides.task))
            returns[group[0]] = _run(launcher, config, launcher.task_function)
        else:
            phase = []
            for index in group:
                phase.append(_run(launcher, configs[index], _plan_task))
                # The group trains after its jobs' contexts have closed: its lines go to the
                # console, not to the last job's log file.
                _console_logging(configs[index])
            _train(phase, f"g{number}")
            for index, ret in zip(group, phase, strict=True):
                returns[index] = ret
    return returns


def _basic_path(launcher: Any, configs: list[DictConfig]) -> str | None:
    """Why no job of this batch can fuse, when none can: TensorFlow trains one model at a
    time, and a sweeper that proposes jobs from the results before them (Optuna) hands
    over one small batch at a time. None when jobs may fuse."""
    if any(config.backend.value == "tensorflow" for config in configs):
        return "backend=tensorflow trains one model at a time (fused groups are JAX's)"
    sweeper = sweeper_name(launcher.config)
    if sweeper not in GRID_SWEEPERS:
        return f"{sweeper} proposes each batch of jobs from the results before it"
    return None


def _run(launcher: Any, config: DictConfig, task: Any) -> JobReturn:
    """``task`` in the job's own Hydra context, as the basic launcher runs a job with
    Hydra's ``run_job`` (its directory, its saved config, its log file, ``chdir``,
    ``env_set``)."""
    return run_job(launcher.hydra_context, task, config, "hydra.sweep.dir", "hydra.sweep.subdir")


def _plan_task(cfg: DictConfig) -> tuple[JobRef, Plan | None]:
    """The task function of a fused job's first phase: check it as a single job is checked
    (:func:`runner.jobs.outcome.planned`). A refused job is recorded FAILED and has no
    plan."""
    stop.install()
    context = JobContext.from_hydra()
    ref = JobRef.from_cfg(cfg, context)
    try:
        return ref, outcome.planned(cfg, context, ref)
    except KeyboardInterrupt:
        outcome.interrupted(ref)


def _console_logging(config: DictConfig) -> None:
    """The job's logging (``hydra.job_logging``) without its file handlers."""
    conf = OmegaConf.to_container(config.hydra.job_logging, resolve=False)
    if not conf or conf.get("root") is None:
        return
    files = {
        name
        for name, handler in conf.get("handlers", {}).items()
        if "FileHandler" in str(handler.get("class", ""))
    }
    conf["handlers"] = {k: v for k, v in conf.get("handlers", {}).items() if k not in files}
    conf["root"]["handlers"] = [h for h in conf["root"].get("handlers", []) if h not in files]
    logging.config.dictConfig(conf)


def _train(phase: list[JobReturn], group: str) -> None:
    """Train the planned jobs of one group (:func:`runner.jobs.outcome.run_plans`), then
    set each job's return value as the basic launcher's task function sets it."""
    done = [ret for ret in phase if ret.status is JobStatus.COMPLETED]
    planned = [ret for ret in done if ret.return_value[1] is not None]
    metrics = {}
    if planned:
        values = outcome.run_plans([ret.return_value[1] for ret in planned], group)
        metrics = {id(ret): value for ret, value in zip(planned, values, strict=True)}
    for ret in done:
        ret.return_value = outcome.result(ret.return_value[0], metrics.get(id(ret)))
