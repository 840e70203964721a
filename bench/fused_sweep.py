"""Fused sweeps against the basic launcher: the same sweep, run both ways in one run.

The sweep: 4 activations x 2 losses x ``--rates`` learning rates x ``--seeds`` seeds on
digits, hidden [128, 64], batch 32, ``--epochs`` epochs, on JAX. The fused sweep runs with
``hydra/launcher=fused hydra/sweeper=composing`` (the defaults), the basic one with
``hydra/launcher=basic hydra/sweeper=basic``. Each
runs as a whole ``python -m runner -m ...`` process into its own fresh SQLite store
(created before the clock starts, as a user's store would be), in turn, ``--repeats``
times. Printed: the median wall time of each, their ratio, and both comparison tables
(mean test accuracy per activation and loss), which must agree: a fused job trains exactly
as it does alone. Overrides after the options go to both sweeps (``device=gpu``).

With ``--extrapolate``, the basic launcher runs only the first one and two seeds of the
sweep's first learning rate (8 and 16 jobs), and its time for the whole sweep is
extrapolated from those two: the 8-job time plus the marginal cost of a job times the
jobs left. With ``--recording``, the fused sweep also runs with ``tracking.enabled=false``:
the difference, over the jobs, is what recording costs a run (store calls, artifacts, the
sweep's parent and table). The two defaults:

    python bench/fused_sweep.py                     # 24 jobs, 30 epochs, both measured
    python bench/fused_sweep.py --rates 5 --seeds 6 --epochs 20 --extrapolate --recording
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

import mlflow
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
ACTIVATIONS = "sigmoid,tanh,relu,elu"
LOSSES = "mse,categorical_crossentropy"
RATES = (0.001, 0.0003, 0.003, 0.01, 0.03)
SWEEPER = {"basic": "basic", "fused": "composing"}


def sweep(
    launcher: str,
    store: str,
    directory: Path,
    epochs: int,
    seeds: int,
    rates: int,
    overrides: list[str],
) -> float:
    """Wall seconds of one whole sweep process."""
    command = [
        sys.executable,
        "-m",
        "runner",
        "-m",
        f"hydra/launcher={launcher}",
        f"hydra/sweeper={SWEEPER[launcher]}",
        f"hydra.sweep.dir={directory}",
        f"activation={ACTIVATIONS}",
        f"loss={LOSSES}",
        f"optimizer.learning_rate={','.join(str(r) for r in RATES[:rates])}",
        f"seed={','.join(str(s) for s in range(seeds))}",
        "model.units=[128,64]",
        f"train.epochs={epochs}",
        *overrides,
    ]
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{launcher} sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def table(store: str) -> pd.DataFrame:
    """Mean test accuracy per activation and loss, over the seeds, of the store's jobs."""
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.role = 'job'")
    assert (runs["status"] == "FINISHED").all(), runs["status"].value_counts()
    by = runs.groupby(["params.activation", "params.loss"])["metrics.test_accuracy"]
    summary = by.agg(["mean", "std", "count"])
    summary.attrs["train_seconds"] = runs["metrics.train_seconds"].sum()
    summary.attrs["devices"] = sorted(runs["tags.device"].unique())
    return summary


def fresh_store(folder: Path, name: str) -> str:
    store = f"sqlite:///{folder / name}.db"
    mlflow.MlflowClient(store).search_experiments()
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", type=int, default=1, choices=range(1, len(RATES) + 1))
    parser.add_argument("--extrapolate", action="store_true", help="basic: 8 and 16 jobs")
    parser.add_argument(
        "--recording",
        action="store_true",
        help="also the fused sweep with tracking.enabled=false: what recording costs a run",
    )
    parser.add_argument("overrides", nargs="*", help="added to both sweeps: device=gpu")
    args = parser.parse_args()

    jobs = 4 * 2 * args.seeds * args.rates
    seconds: dict[str, list[float]] = {"basic": [], "fused": []}
    tables: dict[str, pd.DataFrame] = {}
    samples: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for repeat in range(args.repeats):
            for launcher in seconds:
                sizes = [(args.seeds, args.rates)]
                if launcher == "basic" and args.extrapolate:
                    sizes = [(1, 1), (2, 1)]
                for seeds, rates in sizes:
                    name = f"{launcher}{repeat}-{seeds}-{rates}"
                    store = fresh_store(folder, name)
                    wall = sweep(
                        launcher, store, folder / name, args.epochs, seeds, rates, args.overrides
                    )
                    tables[launcher] = table(store)
                    count = 8 * seeds * rates
                    print(f"{launcher:6} {count:3} jobs, {repeat + 1}: {wall:7.1f} s", flush=True)
                    if launcher == "basic" and args.extrapolate:
                        samples[seeds].append(wall)
                    else:
                        seconds[launcher].append(wall)
            if args.extrapolate:
                eight, sixteen = samples[1][-1], samples[2][-1]
                seconds["basic"].append(eight + (sixteen - eight) / 8 * (jobs - 8))

        if args.recording:
            untracked = [
                sweep(
                    "fused",
                    fresh_store(folder, f"untracked{repeat}"),
                    folder / f"untracked{repeat}",
                    args.epochs,
                    args.seeds,
                    args.rates,
                    [*args.overrides, "tracking.enabled=false"],
                )
                for repeat in range(args.repeats)
            ]

    basic, fused = (statistics.median(seconds[k]) for k in ("basic", "fused"))
    if args.recording:
        bare = statistics.median(untracked)
        print(
            f"fused, tracking.enabled=false: {bare:.1f} s; recording costs "
            f"{(fused - bare) / jobs:.3f} s a run (target <= 0.10 s)"
        )
    if args.extrapolate:
        print("basic: extrapolated from its 8- and 16-job sweeps, measured in this run")
    devices = {k: ", ".join(tables[k].attrs["devices"]) for k in tables}
    print(f"\n{jobs} jobs, {args.epochs} epochs, median of {args.repeats}; trained on: {devices}")
    print("| launcher | wall time | per job |\n| --- | ---: | ---: |")
    for name, wall in (("basic", basic), ("fused", fused)):
        print(f"| {name} | {wall:.1f} s | {wall / jobs:.2f} s |")
    print(f"\nbasic / fused: {basic / fused:.2f}x (target >= 5 for 24 jobs)")
    print(f"fused: {fused:.1f} s for {jobs} jobs (target <= 90 s for 240)")
    if args.extrapolate:  # the basic samples trained other jobs: nothing more to compare
        return
    # A fused run's train_seconds is its share of the group's training time.
    fits = {k: tables[k].attrs["train_seconds"] for k in ("basic", "fused")}
    print(
        f"training alone (the runs' train_seconds summed): basic {fits['basic']:.1f} s, "
        f"fused {fits['fused']:.1f} s, {fits['basic'] / fits['fused']:.2f}x"
    )

    both = tables["basic"].add_suffix(" basic").join(tables["fused"].add_suffix(" fused"))
    gap = (both["mean basic"] - both["mean fused"]).abs().max()
    print("\nmean test accuracy per activation and loss, both launchers:")
    print(both[["mean basic", "mean fused", "std basic"]].round(4).to_string())
    print(f"\nlargest difference of a mean: {gap:.2g}")


if __name__ == "__main__":
    main()
