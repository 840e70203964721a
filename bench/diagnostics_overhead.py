"""How much the per-layer diagnostics add to training time, on the default digits run.

Trains the default model (digits, [64, 64] relu, categorical cross-entropy, 20 epochs,
batch 32) with diagnostics on and off, alternating, in one process, and prints the median
``fit`` time of each and their ratio.

    python bench/diagnostics_overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The default backend unless the caller picks one: KERAS_BACKEND=tensorflow python ...
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from runner import engine  # noqa: E402
from runner.config import register  # noqa: E402
from runner.jobs.execute import build, member, settings  # noqa: E402
from runner.jobs.plan import plan  # noqa: E402
from runner.jobs.spec import JobContext  # noqa: E402
from runner.jobs.state import STATE  # noqa: E402

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")


def fit_seconds(job) -> float:
    keras.backend.clear_session()
    trained = member(job.spec, build(job))
    (result,) = engine.train([trained], job.dataset, settings(job.spec), programs=STATE.programs)
    return result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    register()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        jobs = {
            on: plan(
                compose("config", [f"diagnostics.enabled={on}", "tracking.enabled=false"]),
                JobContext(),
            )
            for on in ("true", "false")
        }
    times: dict[str, list[float]] = {"true": [], "false": []}
    for on in ("true", "false"):  # warm-up: each one's first compile or trace
        fit_seconds(jobs[on])
    for _ in range(args.repeats):
        for on in ("true", "false"):
            times[on].append(fit_seconds(jobs[on]))
    on, off = statistics.median(times["true"]), statistics.median(times["false"])
    print(f"fit time, median of {args.repeats}: diagnostics on {on:.3f} s, off {off:.3f} s")
    print(f"ratio on/off: {on / off:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
