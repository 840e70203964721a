"""``python -m runner``: the Hydra application.

TensorFlow and MLflow are imported inside the task function, so ``--help`` and ``--cfg``
answer without paying for them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from runner import stop
from runner.config import UserError, check_group_overrides, register, validate_values
from runner.sweep import Sweep, sweep_of

log = logging.getLogger("runner")

register()


def share_of_cores(hydra_cfg: DictConfig) -> int | None:
    """Cores per job when the launcher runs ``n_jobs`` jobs at once (joblib's key), so that
    the workers do not fight over the cores; None for one job at a time."""
    n_jobs = hydra_cfg.launcher.get("n_jobs")
    cores = os.cpu_count() or 1
    workers = cores if n_jobs is not None and n_jobs < 0 else n_jobs
    if not workers or workers == 1:
        return None
    return max(1, cores // workers)


def interrupted(cfg: DictConfig, sweep: Sweep | None) -> NoReturn:
    """After Ctrl-C or SIGTERM (the job's own run is ended KILLED already): end the sweep's
    parent runs KILLED too, say in one line what was kept, and exit 130."""
    from runner.track import INTERRUPTED, Tracker, tracking_uri

    if sweep is None:
        log.error("interrupted: the run ended KILLED with the metrics logged so far")
    else:
        tracker = Tracker(tracking_uri(cfg.tracking.uri))
        tracker.end_sweep(sweep.id, INTERRUPTED)
        log.error(
            "interrupted: sweep %s stopped; its finished jobs are kept. Re-run the same "
            "command with resume=true to run only the missing ones.",
            sweep.name,
        )
    sys.exit(130)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | None:
    """Run one job. A user error exits 2 with its message; in a sweep, a failed job is
    recorded and the sweep goes on to the next one. Ctrl-C and SIGTERM stop the job and the
    sweep with true statuses and exit 130."""
    stop.install()
    sweep = sweep_of(HydraConfig.get())
    if cfg.train.threads is None:
        with open_dict(cfg):
            cfg.train.threads = share_of_cores(HydraConfig.get())
    try:
        return run(cfg, sweep)
    except KeyboardInterrupt:
        interrupted(cfg, sweep)


def run(cfg: DictConfig, sweep: Sweep | None) -> dict[str, float] | None:
    try:
        # Checked before TensorFlow is imported, so a bad value is reported at once.
        validate_values(cfg)
        from runner import job

        plan = job.prepare(cfg, sweep)
    except Exception as error:
        if sweep is None:
            if not isinstance(error, UserError):
                raise
            log.error("%s", error)
            sys.exit(2)
        from runner import job

        user_error = isinstance(error, UserError)
        log.error("job %s refused: %s", job.run_name(cfg), error, exc_info=not user_error)
        job.record_failure(cfg, sweep, error)
        return None
    if plan.finished is not None:
        return job.skip(plan, sweep)
    try:
        return job.execute(plan, list(HydraConfig.get().overrides.task), sweep)
    except Exception:
        if sweep is None:
            raise
        log.exception("job %s failed; its run is FAILED and the sweep goes on", job.run_name(cfg))
        return None


if __name__ == "__main__":
    try:
        check_group_overrides(sys.argv[1:])
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
