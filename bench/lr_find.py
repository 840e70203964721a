"""The learning-rate finder over 3 activations × 1 configuration, as a user runs it:

    python -m runner.lr_find activation=sigmoid,tanh,relu

a whole process each time (start-up, imports, planning, three range tests of 300 steps on
digits, the figure, three MLflow runs), into a SQLite store of its own created before the
clock starts (MLflow creates a new store's tables in seconds, once per store). One
warm-up, then ``--repeats`` runs; printed: each run's wall and CPU seconds (user + system),
and the median wall. Pass ``--backend tensorflow`` for the same on TensorFlow.

    python bench/lr_find.py [--repeats 3] [--backend jax|tensorflow]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "runner.lr_find", "activation=sigmoid,tanh,relu"]


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of ``command`` as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("jax", "tensorflow"), default="jax")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        uri = f"sqlite:///{cwd / 'mlflow.db'}"
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
        subprocess.run(
            [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient({uri!r})"
             ".search_experiments()"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        command = [*COMMAND, f"backend={args.backend}"]
        timed(command, cwd, env)
        walls = []
        for i in range(args.repeats):
            wall, cpu = timed(command, cwd, env)
            walls.append(wall)
            print(f"run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU")
        print(f"median wall: {statistics.median(walls):.2f} s ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
