"""What a job and a launcher know of their sweep: its id and name, its size, a job's place
in it, the threads each job gets, and what its launcher cannot do (refused before any job
runs). The Hydra callback that records the sweep is runner/callback.py."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.config import UserError


@dataclass(frozen=True)
class Sweep:
    """The sweep a job belongs to: its id (the sweep directory, absolute) and its name (the
    directory as Hydra was given it). Re-running a sweep into the same directory continues
    the same parent run."""

    id: str
    name: str


@dataclass(frozen=True)
class SweepReport:
    """What the end of a sweep says (:func:`runner.compare.record.report_sweep`): how many
    job runs it recorded, how many FAILED, their table as text, and where the UI shows the
    sweep (None without runs). Plain data: the tracking process sends it back."""

    runs: int
    failed: int
    table: str
    link: str | None


def sweep_of(hydra_cfg: DictConfig) -> Sweep | None:
    """The sweep of a job or callback from its ``hydra`` config node; None in a single run.
    A relative sweep directory is the one in the directory Hydra started in, also for a job
    that Hydra has moved into its own directory (``hydra.job.chdir=true``)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    directory = Path(hydra_cfg.runtime.cwd, hydra_cfg.sweep.dir).resolve()
    return Sweep(str(directory), str(hydra_cfg.sweep.dir))


# The number of jobs in the sweep, put in the environment of the sweep's process at its
# start: the jobs that launchers run in that process read it there, and those run in
# worker processes (joblib, submitit, Ray) inherit it.
SWEEP_SIZE = "ACTLAB_SWEEP_SIZE"
# The sweepers that run the grid of the swept values: Hydra's and the composing one.
GRID_SWEEPERS = ("BasicSweeper", "ComposingSweeper")


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs the sweep runs: for Hydra's grid sweeper (and the composing one, built
    on it), every combination of the swept values of ``hydra.sweeper.params`` and the
    command line, where a key given twice takes its last values; for a search, its
    ``n_trials``. None for another sweeper, or a sweep the grid sweeper will refuse."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if sweeper_name(config) not in GRID_SWEEPERS:
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    sizes = {}
    try:
        for override in OverridesParser.create().parse_overrides(arguments):
            values = override.sweep_string_iterator() if override.is_sweep_override() else [None]
            sizes[override.get_key_element()] = len(list(values))
    except Exception:  # the sweeper says what is wrong with the sweep, in its own words
        return None
    return math.prod(sizes.values())


def position(hydra_cfg: DictConfig) -> str | None:
    """Which job of the sweep this is, counted from 1: ``3/12``, or ``3`` when the sweep's
    size is not known; None in a single run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    number = hydra_cfg.job.num + 1
    size = os.environ.get(SWEEP_SIZE)
    return f"{number}/{size}" if size else str(number)


# Launchers that run every job in the sweep's own process, which keeps one backend.
IN_PROCESS = ("BasicLauncher", "FusedLauncher")


def swept_values(config: DictConfig, key: str) -> list[str]:
    """Every value the sweep gives ``key``: from its command-line overrides, else the
    config's own."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    for override in parsed:
        if override.key_or_group == key:
            if override.is_sweep_override():
                return [str(value) for value in override.sweep_iterator()]
            return [str(override.value())]
    return [str(OmegaConf.select(config, key, default=""))]


def overridden(config: DictConfig) -> set[str]:
    """The keys and groups that the sweep's command-line overrides give."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    return {override.key_or_group for override in parsed}


def threads_per_job(hydra_cfg: DictConfig) -> int | None:
    """CPU threads per job when the launcher runs jobs side by side, so that they do
    not fight over the cores: the CPUs the launcher gives each job (submitit's
    ``cpus_per_task``; a Ray task's ``num_cpus``, 1 unless ``hydra.launcher.ray.remote``
    sets it, which is also how many tasks Ray runs at once), or the cores / ``n_jobs`` of
    joblib's workers. None (all cores) for one job at a time."""
    launcher = hydra_cfg.launcher
    if launcher.get("cpus_per_task"):
        return launcher.cpus_per_task
    if "ray" in launcher:
        return max(1, int(launcher.ray.get("remote", {}).get("num_cpus", 1)))
    n_jobs = launcher.get("n_jobs")
    cores = os.cpu_count() or 1
    workers = cores if n_jobs is not None and n_jobs < 0 else n_jobs
    if not workers or workers == 1:
        return None
    return max(1, cores // workers)


def sweeper_name(config: DictConfig) -> str:
    """The class name of the sweep's sweeper: ``ComposingSweeper``, ``OptunaSweeper``..."""
    return str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]


def launcher_name(config: DictConfig) -> str:
    """The class name of the sweep's launcher: ``JoblibLauncher``, ``FusedLauncher``..."""
    return str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]


# What a process fixes once, when its first job sets up its backend (runner/backend.py).
PER_PROCESS = {
    "backend": "the Keras backend it started with",
    "device": "the devices its backend set up first",
    "train.threads": "the thread pools its backend started",
}


def check_launch(config: DictConfig) -> None:
    """Refuse, before any job runs, what the sweep's launcher cannot do: switch the backend,
    the device or the threads between jobs of one process, or fuse no job at all."""
    launcher = launcher_name(config)
    for key, what in PER_PROCESS.items():
        values = sorted(set(swept_values(config, key)))
        if launcher in IN_PROCESS and len(values) > 1:
            raise UserError(
                f"{key}={','.join(values)} cannot be swept by {launcher}: it runs every job "
                f"in this one process, and a process keeps {what}. Use "
                f"hydra/launcher=joblib (a process per job), or run one sweep per {key}."
            )
    check_swept_folds(config)
    if launcher == "FusedLauncher" and config.hydra.launcher.max_group < 1:
        raise UserError(
            f"hydra.launcher.max_group={config.hydra.launcher.max_group} is not allowed: it "
            "is the most jobs one fused group trains at once, 1 or more."
        )


def check_swept_folds(config: DictConfig) -> None:
    """Refuse a sweep whose ``dataset.fold`` values are not all folds of each
    ``dataset.folds`` it gives (:func:`runner.checks.check_fold`). Values that are no
    integers are left to Hydra's types, which refuse each job."""
    from runner.checks import check_fold

    def integers(key: str) -> list[int | None]:
        found = []
        for value in swept_values(config, key):
            if value in ("", "None", "null"):
                found.append(None)
            elif value.lstrip("-").isdigit():
                found.append(int(value))
        return found

    for folds in integers("dataset.folds"):
        for fold in integers("dataset.fold"):
            check_fold(folds, fold)


def in_ray_task() -> bool:
    """Whether this process is a Ray worker, which runs jobs as Ray tasks."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
