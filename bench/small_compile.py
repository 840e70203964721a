"""A small fused group's first compile, and what each of the engine's two ways of making
it smaller costs an epoch, side by side.

The groups are the jobs of ``python -m runner -m activation=... seed=...`` on digits (the
default model, loss and optimizer), planned and built as the fused launcher does and
trained by ``runner.engine.train``, each measurement in a process of its own with an empty
cache folder (no kept program, nothing in JAX's persistent cache): the 9-job sweep of
bench/small_sweep.py (relu, tanh, sigmoid, 3 seeds) and a 32-job one (relu, tanh,
sigmoid, elu, 8 seeds). The variants:

- before: a function an activation, and the epoch's last partial batch (digits: 1,077
  training samples in batches of 32, so 21) stepped through on its own, as a second
  compiled step of its shape;
- padded: the last partial batch padded to a full one whose padding weighs nothing
  (``runner.engine.program.pads``);
- one function: the families that differ only in their activations as one, each member's
  activations chosen when it runs (``runner.engine.families.MIXED_WORK``: both groups, at 10
  epochs, are within it);
- both: the engine as it is.

Each figure is the engine's own log line, "N s compiling, then M ms an epoch" (the first
epoch less a median one, then the median epoch); medians over ``--repeats`` rounds, the
variants in turn within each round.

    python bench/small_compile.py [--repeats 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {
    "9 jobs": (["relu", "tanh", "sigmoid"], 3),
    "32 jobs": (["relu", "tanh", "sigmoid", "elu"], 8),
}
VARIANTS = {
    "before": {"mixed": False, "pads": False},
    "padded": {"mixed": False, "pads": True},
    "one function": {"mixed": True, "pads": False},
    "both": {"mixed": True, "pads": True},
}


def inner(group: str, variant: str, epochs: int) -> None:
    """Train ``group`` as ``variant``; print the engine's compile and epoch figures."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from runner import engine
    from runner.config import CONF, register
    from runner.engine import families, program
    from runner.jobs import execute
    from runner.jobs.plan import plan
    from runner.jobs.spec import JobContext

    if not VARIANTS[variant]["mixed"]:
        families.MIXED_WORK = 0
    if not VARIANTS[variant]["pads"]:
        program.pads = lambda found: False
    activations, seeds = GROUPS[group]
    register()
    plans = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for activation in activations:
            for seed in range(seeds):
                overrides = [f"activation={activation}", f"seed={seed}", f"train.epochs={epochs}"]
                cfg = compose("config", overrides=[*overrides, "tracking.enabled=false"])
                plans.append(plan(cfg, JobContext()))
    members = [execute.member(p.spec, execute.build(p)) for p in plans]
    figures = []

    class Figures(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "s compiling, then" in record.msg:
                figures.append(record.args[2:])

    logging.getLogger("runner.engine").addHandler(Figures())
    logging.getLogger("runner.engine").setLevel(logging.INFO)
    engine.train(members, plans[0].dataset, execute.settings(plans[0].spec))
    ((compiling, epoch_ms),) = figures
    print(json.dumps({"compiling": compiling, "epoch_ms": epoch_ms}))


def _measure(group: str, variant: str, epochs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "KERAS_BACKEND": "jax"}
        done = subprocess.run(
            [sys.executable, __file__, "--inner", group, variant, "--epochs", str(epochs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(*args.inner, args.epochs)
        return
    found: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for group in GROUPS:
            for variant in VARIANTS:
                found.setdefault((group, variant), []).append(_measure(group, variant, args.epochs))
    print("| group | variant | compiling (s) | epoch (ms) |")
    print("| --- | --- | ---: | ---: |")
    for (group, variant), runs in found.items():
        compiling = statistics.median(r["compiling"] for r in runs)
        epoch = statistics.median(r["epoch_ms"] for r in runs)
        print(f"| {group} | {variant} | {compiling:.2f} | {epoch:.2f} |")


if __name__ == "__main__":
    main()
