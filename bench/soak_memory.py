"""Whether a long training's memory stays flat: resident memory per epoch, far into a run.

Trains one small model (iris, [16], the runner's own engine on the process's backend, the
diagnostics on) for ``--epochs`` epochs and reads the process's resident memory (Linux's
``/proc/self/status``) at a tenth of the way (at least twice the epochs a result keeps of
its curves, which it fills first) and at the end, once garbage is collected: their
difference over the epochs between is what each epoch leaves behind. A run of the 10**7
epochs the runner allows must not grow by gigabytes.

    python bench/soak_memory.py [--epochs 30000]
    KERAS_BACKEND=tensorflow python bench/soak_memory.py --epochs 6000
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS in /proc/self/status: this reads Linux's /proc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30_000)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from runner import engine
    from runner.config import CONF, register
    from runner.engine import KEPT_EPOCHS
    from runner.jobs.execute import build, member, settings
    from runner.jobs.plan import plan
    from runner.jobs.spec import JobContext

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            [
                "dataset=iris",
                "model.units=[16]",
                f"train.epochs={args.epochs}",
                "tracking.enabled=false",
                f"backend={os.environ['KERAS_BACKEND']}",
            ],
        )
    job = plan(cfg, JobContext())
    marks: dict[int, int] = {}
    first = max(args.epochs // 10, 2 * KEPT_EPOCHS)

    def measure(m: int, epoch: int, logs: dict[str, float]) -> None:
        if epoch + 1 in (first, args.epochs):
            gc.collect()
            marks[epoch + 1] = rss_bytes()

    engine.train([member(job.spec, build(job))], job.dataset, settings(job.spec), measure)
    grown = marks[args.epochs] - marks[first]
    epochs = args.epochs - first
    print(
        f"{os.environ['KERAS_BACKEND']}: resident memory {marks[first] / 2**20:.1f} MiB at "
        f"epoch {first}, {marks[args.epochs] / 2**20:.1f} MiB at epoch {args.epochs}: "
        f"{grown / epochs:+.1f} bytes an epoch over {epochs} epochs"
    )


if __name__ == "__main__":
    main()
