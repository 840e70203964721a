"""Tracking overhead: the whole ``python -m runner`` process with MLflow against the same
job with ``tracking.enabled=false``, side by side, and how much of the difference is only
importing MLflow.

The default job (digits, [64, 64] relu, 20 epochs) runs ``--repeats`` times with each
setting, into a SQLite store in a temporary directory that a warm-up round has created (a
user's store exists after the first run; creating one takes seconds more, once). In the
same rounds, two interpreters only import: the runner's job module (TensorFlow, Keras,
scikit-learn, matplotlib), and the same plus MLflow's client and its SQLite store, as a
tracked job imports them. The four commands run in turn, their order rotating every round.
Printed: the median wall time of each, the median time ``fit`` took (from the job's log),
and the ratios.

    python bench/tracking_overhead.py [--repeats 5] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINED = re.compile(r"trained in ([0-9.]+) s")
MLFLOW = "mlflow.tracking, mlflow.store.tracking.sqlalchemy_store"
JOBS = "runner.jobs.execute"
IMPORTS = {JOBS: f"import {JOBS}", f"{JOBS} + MLflow": f"import {JOBS}, {MLFLOW}"}


def timed(command: list[str], folder: Path) -> tuple[float, str]:
    """The wall time of ``command`` and its output; exits when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return wall, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        job = [sys.executable, "-m", "runner", f"train.epochs={args.epochs}"]
        commands = {
            "MLflow (SQLite)": [*job, f"tracking.uri={store}"],
            "tracking.enabled=false": [*job, "tracking.enabled=false"],
            **{name: [sys.executable, "-c", code] for name, code in IMPORTS.items()},
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        fits: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # warm-up: the store, the file cache
            timed(command, folder)
        names = list(commands)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                wall, output = timed(commands[name], folder)
                walls[name].append(wall)
                if trained := TRAINED.search(output):
                    fits[name].append(float(trained.group(1)))
    wall = {name: statistics.median(values) for name, values in walls.items()}
    print(f"python -m runner train.epochs={args.epochs}, median of {args.repeats}")
    print(f"{'':24s} {'wall s':>7s} {'fit s':>6s}")
    for name in commands:
        fit = f"{statistics.median(fits[name]):6.2f}" if fits[name] else ""
        print(f"{name:24s} {wall[name]:7.2f} {fit}")
    tracked, untracked = wall["MLflow (SQLite)"], wall["tracking.enabled=false"]
    imports = wall[f"{JOBS} + MLflow"] - wall[JOBS]
    print(f"with / without tracking: {tracked / untracked:.2f}x  (target <= 1.10)")
    print(
        f"of the {tracked - untracked:.2f} s difference, importing MLflow's client and "
        f"SQLite store takes {imports:.2f} s; the rest is {tracked - untracked - imports:.2f} s"
    )


if __name__ == "__main__":
    main()
