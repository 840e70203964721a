"""``python -m runner``: the Hydra application. Each job's life is :mod:`runner.jobs.outcome`.

The jobs' code, and with it Keras (on JAX or TensorFlow) and MLflow, is imported inside the
task function, so that ``--help`` and ``--cfg`` answer without paying for them.
"""

from __future__ import annotations

from runner import stop

# Before the imports below, which take a second: until the process has a run to end,
# Ctrl-C or SIGTERM ends it at once with one line instead of a traceback.
stop.install_at_start()

import sys

import hydra
from omegaconf import DictConfig

from runner.checks import check_group_overrides
from runner.config import CONF, UserError, register

register()

# The flags of a sweep, whose tracking process starts with it (runner.tracking.remote).
MULTIRUN = {"-m", "--multirun"}


# An absolute path: Hydra reads a relative one as a package when the app runs as the
# `actlab` command.
@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | float | None:
    """Run one job and return its metrics, or with ``objective`` set, that metric alone for
    a search to optimise. A user error exits 2 with its message; in a sweep, a failed job is
    recorded and the sweep goes on to the next one. Ctrl-C and SIGTERM stop the job and the
    sweep with true statuses and exit 130."""
    from runner.jobs import outcome

    return outcome.run(cfg)


def cli() -> None:
    """``python -m runner``, and the ``actlab`` command (which shell completion needs: Hydra
    completes a command, not ``python -m``)."""
    try:
        check_group_overrides(sys.argv[1:])
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    if MULTIRUN & set(sys.argv[1:]):
        from runner.tracking import remote

        remote.start_early()
    try:
        main()
    except KeyboardInterrupt:
        # A signal outside a job: between a sweep's jobs, or around a single run's.
        from runner.jobs import outcome

        outcome.stopped()


if __name__ == "__main__":
    cli()
