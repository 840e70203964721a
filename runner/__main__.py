"""``python -m runner``: the Hydra application.

Keras (with JAX or TensorFlow) and MLflow are imported inside the task function, so
``--help`` and ``--cfg`` answer without paying for them.
"""

from __future__ import annotations

from runner import stop

# Before the imports below, which take a second: until the process has a run to end,
# Ctrl-C or SIGTERM ends it at once with one line instead of a traceback.
stop.install_at_start()

import logging
import os
import sys
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from runner.app import interrupted, job_result, plan_job, stopped
from runner.checks import check_group_overrides
from runner.config import CONF, UserError, register
from runner.sweep import Sweep, in_worker, sweep_of

if TYPE_CHECKING:
    from runner.job import Plan

log = logging.getLogger("runner")

register()


def share_of_cores(hydra_cfg: DictConfig) -> int | None:
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


# An absolute path: Hydra reads a relative one as a package when the app runs as the
# `actlab` command.
@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | float | None:
    """Run one job and return its metrics, or with ``objective`` set, that metric alone for
    a search to optimise. A user error exits 2 with its message; in a sweep, a failed job is
    recorded and the sweep goes on to the next one. Ctrl-C and SIGTERM stop the job and the
    sweep with true statuses and exit 130."""
    sweep = sweep_of(HydraConfig.get())
    if cfg.train.threads is None:
        with open_dict(cfg):
            cfg.train.threads = share_of_cores(HydraConfig.get())
    try:
        # A sweep has its parent run to end; a single run has nothing to end until it is
        # planned, and a signal while it imports Keras or loads the data simply exits.
        if sweep is not None:
            stop.install()
        plan = plan_job(cfg, sweep)
        stop.install()
        metrics = run(plan, sweep)
    except KeyboardInterrupt:
        interrupted(cfg, sweep)
    if in_worker(sweep):
        stop.install_between_jobs()
    return job_result(cfg, metrics)


def run(plan: Plan | None, sweep: Sweep | None) -> dict[str, float] | None:
    if plan is None:
        return None
    from runner import job
    from runner.tracking import Unrecorded

    if plan.finished is not None:
        return job.skip(plan, sweep)
    try:
        return job.execute(plan, list(HydraConfig.get().overrides.task), sweep)
    except Unrecorded:
        # The run has logged what it could not record and where it is kept; a sweep goes on.
        if sweep is None:
            sys.exit(1)
        return None
    except Exception:
        stop.check()
        if sweep is None:
            raise
        log.exception("%s failed; its run is FAILED and the sweep goes on", job.label(plan.cfg))
        return None


def cli() -> None:
    """``python -m runner``, and the ``actlab`` command (which shell completion needs: Hydra
    completes a command, not ``python -m``)."""
    try:
        check_group_overrides(sys.argv[1:])
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:
        # A signal outside a job: between a sweep's jobs, or around a single run's.
        stopped()


if __name__ == "__main__":
    cli()
