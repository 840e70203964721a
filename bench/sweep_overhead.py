"""Sweep overhead: what each job of a sweep costs beyond its training, the 2-worker joblib
launcher against the basic one, the peak memory of a run and of a sweep, and the start-up
of ``--help`` and ``--cfg job``, measured side by side in one run of this script.

- per-job overhead: the 12-job sweep ``activation=sigmoid,tanh,relu
  loss=mse,categorical_crossentropy seed=0,1`` and a 1-job sweep, both with the basic
  launcher. Each one's wall time less the sum of its runs' ``train_seconds`` (the time
  ``fit`` took) is what it spent outside training; the difference between the two, over
  the 11 extra jobs, is what one more job costs: the process's one-time start-up
  (Python, Hydra, TensorFlow, MLflow, the store, the sweep's parent run and its table)
  cancels out.
- joblib: the same 12-job sweep with ``hydra/launcher=joblib hydra.launcher.n_jobs=2``;
  the ratio of its wall time to the basic launcher's.
- peak RSS: the largest sum of the resident memory of a process and all its descendants,
  sampled every 0.2 s from /proc (Linux): the default job alone, and the 2-worker sweep.
- start-up: the median wall time of ``python -m runner --help`` and ``--cfg job``.

Every sweep tracks into a SQLite store in a temporary directory that a warm-up job has
created; it and a warm-up 1-job sweep have also compiled their programs, as a user's
earlier runs would have.

    python bench/sweep_overhead.py [--epochs 20] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

SWEEP = ["activation=sigmoid,tanh,relu", "loss=mse,categorical_crossentropy", "seed=0,1"]
ONE = ["activation=relu", "loss=categorical_crossentropy", "seed=0"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# Hydra's own launcher and sweeper, one job after another (the default fuses on JAX).
BASIC = ["hydra/launcher=basic", "hydra/sweeper=basic"]


def tree_rss(root: int) -> int:
    """The resident memory, in bytes, of process ``root`` and all its descendants."""
    pages, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the process ended meanwhile
    return pages * os.sysconf("SC_PAGE_SIZE")


def run(folder: Path, *args: str) -> tuple[float, int]:
    """The wall time of ``python -m runner ARGS`` and its peak RSS with its descendants."""
    command = [sys.executable, "-m", "runner", *args]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, tree_rss(process.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output.decode()}")
    return wall, peak


def train_seconds(store: str, sweep_dir: Path) -> tuple[int, float]:
    """How many runs the sweep recorded, and the sum of their ``train_seconds``."""
    client = MlflowClient(store)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.sweep_id = '{sweep_dir.resolve()}' and tags.role = 'job'",
    )
    return len(runs), sum(r.data.metrics["train_seconds"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        common = [f"tracking.uri={store}", f"train.epochs={args.epochs}"]
        single_wall, single_rss = run(folder, *common[:1])  # also the warm-up
        # A sweep's job compiles a program of its own (it switches activations and losses at
        # run time): warmed too, so that no measured sweep pays a first-ever compile.
        run(folder, "-m", *common, *BASIC, *ONE, f"hydra.sweep.dir={folder / 'warm-up'}")
        startup = {
            " ".join(flags): statistics.median(run(folder, *flags)[0] for _ in range(3))
            for flags in (["--help"], ["--cfg", "job"])
        }
        sweeps = {"one": BASIC + ONE, "basic": BASIC + SWEEP, "joblib": JOBLIB + SWEEP}
        walls: dict[str, list[float]] = {name: [] for name in sweeps}
        outside: dict[str, list[float]] = {name: [] for name in sweeps}
        joblib_rss = 0
        for repeat in range(args.repeats):
            for name, overrides in sweeps.items():
                where = folder / f"{name}-{repeat}"
                wall, rss = run(folder, "-m", *common, *overrides, f"hydra.sweep.dir={where}")
                jobs, trained = train_seconds(store, where)
                expected = 1 if name == "one" else 12
                if jobs != expected:
                    raise SystemExit(f"sweep {name} recorded {jobs} runs, not {expected}")
                walls[name].append(wall)
                outside[name].append(wall - trained)
                if name == "joblib":
                    joblib_rss = max(joblib_rss, rss)
    wall = {name: statistics.median(values) for name, values in walls.items()}
    rest = {name: statistics.median(values) for name, values in outside.items()}
    per_job = (rest["basic"] - rest["one"]) / 11
    print(f"12-job sweep, train.epochs={args.epochs}, median of {args.repeats}")
    print(f"{'':26s} {'wall s':>8s} {'outside fit s':>14s}")
    print(f"{'1 job, basic launcher':26s} {wall['one']:8.2f} {rest['one']:14.2f}")
    print(f"{'12 jobs, basic launcher':26s} {wall['basic']:8.2f} {rest['basic']:14.2f}")
    print(f"{'12 jobs, joblib n_jobs=2':26s} {wall['joblib']:8.2f}")
    print(f"per-job overhead: {per_job:.2f} s/job  (target <= 0.5)")
    print(f"joblib / basic: {wall['joblib'] / wall['basic']:.2f}x  (target <= 0.65)")
    print(
        f"peak RSS: default job {single_rss / 2**20:.0f} MiB (wall {single_wall:.1f} s), ", end=""
    )
    print(f"2-worker sweep {joblib_rss / 2**20:.0f} MiB")
    for flag, seconds in startup.items():
        print(f"python -m runner {flag}: {seconds:.2f} s  (target <= 1.0)")


if __name__ == "__main__":
    main()
