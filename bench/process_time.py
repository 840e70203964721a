"""The whole default job as a user runs it, on JAX against TensorFlow: ``python -m runner``
and ``python -m runner backend=tensorflow``, each a fresh process tracking into a store
of its own (created before the clock starts), timed in alternating pairs.

Printed: each pair's wall times, the medians and their ratio.

    python bench/process_time.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent


def wall(folder: Path, name: str, *overrides: str) -> float:
    store = f"sqlite:///{folder / name}.db"
    MlflowClient(store).search_experiments()
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    command = [sys.executable, "-m", "runner", f"hydra.run.dir={folder / name}", *overrides]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"jax": [], "tensorflow": []}
    with tempfile.TemporaryDirectory() as folder:
        # One run of each first, not counted: it fills the OS's file cache and JAX's
        # compilation cache, as a user's earlier runs would have.
        for backend in times:
            wall(Path(folder), f"warm-{backend}", f"backend={backend}")
        for pair in range(args.pairs):
            for backend in times:
                seconds = wall(Path(folder), f"{backend}{pair}", f"backend={backend}")
                times[backend].append(seconds)
            print(f"pair {pair + 1}: jax {times['jax'][-1]:.2f} s, "
                  f"tensorflow {times['tensorflow'][-1]:.2f} s", flush=True)  # fmt: skip
    jax, tf = (statistics.median(times[k]) for k in ("jax", "tensorflow"))
    print(f"median: jax {jax:.2f} s, tensorflow {tf:.2f} s")
    print(f"jax / tensorflow: {jax / tf:.2f}x  (target <= 0.70)")


if __name__ == "__main__":
    main()
