"""The Hydra callback that groups a sweep's jobs under one MLflow parent run.

At the start it creates the parent in the sweep's experiment, before any job runs, so that
parallel workers find it instead of racing to create it. At the end it prints the sweep's
comparison table from the store, ends the parent with the sweep's status, and makes the
process exit non-zero when a job failed.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import stop
from runner.config import UserError, experiment_name

log = logging.getLogger("runner")


@dataclass(frozen=True)
class Sweep:
    """The sweep a job belongs to: its id (the sweep directory, absolute) and its name (the
    directory as Hydra was given it). Re-running a sweep into the same directory continues
    the same parent run."""

    id: str
    name: str


def sweep_of(hydra_cfg: DictConfig) -> Sweep | None:
    """The sweep of a job or callback from its ``hydra`` config node; None in a single run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Sweep(str(Path(hydra_cfg.sweep.dir).resolve()), str(hydra_cfg.sweep.dir))


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if str(sweeper.get("_target_", "")).rsplit(".", 1)[-1] not in GRID_SWEEPERS:
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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    for override in parsed:
        if override.key_or_group == key:
            if override.is_sweep_override():
                return [str(value) for value in override.sweep_iterator()]
            return [str(override.value())]
    return [str(OmegaConf.select(config, key, default=""))]


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


def launcher_name(config: DictConfig) -> str:
    """The class name of the sweep's launcher: ``JoblibLauncher``, ``FusedLauncher``..."""
    return str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]


def check_launch(config: DictConfig) -> None:
    """Refuse, before any job runs, what the sweep's launcher cannot do: switch the backend
    between jobs of one process, or fuse jobs on TensorFlow."""
    launcher = launcher_name(config)
    backends = sorted(set(swept_values(config, "backend")))
    if launcher in IN_PROCESS and len(backends) > 1:
        raise UserError(
            f"backend={','.join(backends)} cannot be swept by {launcher}: it runs every job in "
            "this one process, and a process keeps the Keras backend it started with. Use "
            "hydra/launcher=joblib (a process per job), or run one sweep per backend."
        )
    if launcher == "FusedLauncher" and "tensorflow" in backends:
        raise UserError(
            "hydra/launcher=fused trains on backend=jax only (each job's Keras model vmapped "
            "in one JAX program). Use backend=jax, or the basic or joblib launcher for "
            "backend=tensorflow."
        )


# The id of the process that runs the sweep (its callback, its launcher): jobs that the
# launcher runs in this process see it, those in workers of their own (joblib, submitit,
# Ray) do not, and leave the stopping of the sweep to it (runner.lifecycle.interrupted).
owner: int | None = None


def in_worker(sweep: Sweep | None) -> bool:
    """Whether this process runs a job of ``sweep`` for the launcher of another process."""
    return sweep is not None and owner != os.getpid()


def in_ray_task() -> bool:
    """Whether this process is a Ray worker, which runs jobs as Ray tasks."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


# The master config of the sweep this process runs, from the moment its parent run exists
# until the parent has ended: a signal outside a job (while the launcher composes or starts
# the jobs) ends the sweep from there (runner.lifecycle.stopped).
started: DictConfig | None = None


def prepare_workers(launcher: str) -> None:
    """Let the workers of ``launcher`` end their jobs' runs on a signal before they are
    gone. Left to themselves, loky kills joblib's workers at once, submitit's local
    controllers kill their jobs a second after Ctrl-C, and Ray's shutdown kills its jobs:
    often before the run has ended."""
    from runner import patches

    if launcher == "JoblibLauncher":
        patches.loky_workers_end_their_jobs_before_being_killed()
    elif launcher == "LocalLauncher":
        patches.submitit_local_jobs_take_ctrl_c_themselves()
    elif launcher == "RayLauncher":
        patches.ray_jobs_cancelled_on_a_stop()


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global owner, started
        from runner.tracking import open_tracker

        owner = os.getpid()
        prepare_workers(launcher_name(config))
        try:
            check_launch(config)
        except UserError as error:
            log.error("%s", error)
            sys.exit(2)
        size = sweep_size(config)
        if size is None:
            os.environ.pop(SWEEP_SIZE, None)
        else:
            os.environ[SWEEP_SIZE] = str(size)
        sweep = sweep_of(config.hydra)
        if not config.tracking.enabled:
            log.warning(
                "tracking.enabled=false: nothing is recorded and no table is printed at the "
                "end; the metrics are in the jobs' logs only"
            )
            # No run to end, but the jobs' workers to stop on a signal (runner.lifecycle.stopped).
            stop.install()
            return
        try:
            tracker = open_tracker(config.tracking)
            experiment_id = tracker.experiment(experiment_name(config))
            # From its parent run on, the sweep has a run to end on a signal; the signal is
            # held back until the parent is known to end it.
            stop.install()
            with stop.held():
                tracker.sweep_parent(experiment_id, sweep.id, sweep.name, claim=True)
                started = config
        except UserError as error:
            log.error("%s", error)
            sys.exit(2)
        except KeyboardInterrupt:
            from runner.lifecycle import stopped

            stopped()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        sweep = sweep_of(config.hydra)
        try:
            try:
                end(config, sweep)
            except Exception:
                # Hydra would print an error that a signal's KeyboardInterrupt turned into
                # as a warning, and go on: it is that signal.
                stop.raise_if_signalled()
                raise
        except KeyboardInterrupt:
            from runner.tracking import INTERRUPTED, open_tracker

            # Unless the parent has ended already, with the sweep's own status.
            if started is not None:
                open_tracker(config.tracking).end_sweep(sweep.id, INTERRUPTED)
                log.error(
                    "interrupted at the end of sweep %s: every job had ended, and their runs "
                    "are kept; the parent run ended KILLED before it got the sweep's table. "
                    "`python -m runner.compare --sweep %s` prints the table.",
                    sweep.name,
                    sweep.name,
                )
            sys.exit(130)


def end(config: DictConfig, sweep: Sweep) -> None:
    """Print the sweep's table from the store, put it on the parent run, end the parent
    with the sweep's status, and exit 1 when a job failed."""
    global started
    from runner.compare import distinct, format_table, record_sweep, summarize, sweep_runs
    from runner.tracking import COMPLETED, FAILED, open_tracker, ui_url

    try:
        tracker = open_tracker(config.tracking)
    except UserError as error:
        log.error("%s The sweep's table and its parent run's status are not recorded.", error)
        sys.exit(1)
    runs = sweep_runs(tracker.uri, sweep.id)
    failed = 0
    link = None
    if runs.empty:
        log.warning("sweep %s recorded no runs", sweep.name)
    else:
        failed = int(runs["tags.outcome"].eq(FAILED).sum())
        table = summarize(distinct(runs))
        log.info("sweep %s: %d runs\n%s", sweep.name, len(runs), format_table(table))
        # The UI shows the comparison on each parent's page: description, metrics, files.
        parent_id = record_sweep(tracker.uri, runs, table, sweep.name)
        link = ui_url(tracker.uri, runs.iloc[0]["experiment_id"], parent_id)
    # A search (hparams_search=optuna) writes its best params here: the parent keeps them.
    best = Path(sweep.id) / "optimization_results.yaml"
    if best.exists():
        experiment_id = tracker.experiment(experiment_name(config))
        parent_id = tracker.sweep_parent(experiment_id, sweep.id, sweep.name)
        tracker.log_file(parent_id, best)
    if link:
        log.info("the sweep in the MLflow UI (`make ui` serves it): %s", link)
    tracker.end_sweep(sweep.id, FAILED if failed else COMPLETED)
    started = None
    if failed:
        log.error("%d of %d jobs failed; their runs carry the error", failed, len(runs))
        sys.exit(1)
