"""``python -m runner.compare`` on a large sweep: a SQLite store holding one sweep of
4 activations x 2 losses x ``--rates`` learning rates x ``--seeds`` seeds (240 runs by
default), recorded with MLflow's client as the runner records a job (its params, tags,
``--epochs`` epochs of ``val_accuracy`` and ``val_loss``, its test metrics and outcome),
then the comparison as a user runs it, a fresh process each time, ``--repeats`` times.
Ten seeds and more put every interval and difference on the bootstrap. Prints how long
the store took to build, and each comparison's wall and CPU time.

    python bench/compare_speed.py                           # 240 runs: 24 groups of 10
    python bench/compare_speed.py --rates 10 --seeds 30     # 2,400 runs: 80 groups of 30
    python bench/compare_speed.py --store big.db -- --pairs all --speed val_accuracy=0.95
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu")
LOSSES = ("mse", "categorical_crossentropy")
# Accuracy on a 360-sample test split, in steps of 1/360, as on digits.
TEST_SIZE = 360
SWEEP = "multirun/2026-12-01/10-00-00-4242"


def record(client: MlflowClient, experiment_id: str, parent: str, job: tuple, args) -> None:
    """One job's run: params, tags, per-epoch validation curves and test metrics."""
    activation, loss, rate, seed = job
    rng = np.random.default_rng(hash(job) % 2**32)
    ceiling = {"sigmoid": 0.90, "tanh": 0.965, "relu": 0.968, "elu": 0.966}[activation]
    ceiling -= 0.01 * (loss == "mse") + 0.02 * abs(np.log10(rate) + 3)
    pace = {"sigmoid": 0.25, "tanh": 0.6, "relu": 0.7, "elu": 0.7}[activation]
    epochs = np.arange(1, args.epochs + 1)
    curve = ceiling * (1 - np.exp(-pace * epochs)) + rng.normal(0, 0.004, args.epochs)
    accuracy = np.round((ceiling + rng.normal(0, 0.005)) * TEST_SIZE) / TEST_SIZE
    now = int(time.time() * 1000)
    metrics = [Metric("val_accuracy", float(v), now, int(s)) for s, v in enumerate(curve)]
    metrics += [Metric("val_loss", float(1 - v), now, int(s)) for s, v in enumerate(curve)]
    metrics += [
        Metric("test_accuracy", float(np.float32(accuracy)), now, 0),
        Metric("test_loss", float(1 - accuracy), now, 0),
        Metric("train_seconds", float(rng.uniform(2, 3)), now, 0),
    ]
    params = {
        "activation": activation,
        "loss": loss,
        "optimizer": "adam",
        "optimizer.learning_rate": rate,
        "seed": seed,
        "dataset": "digits",
        "dataset.seed": 0,
        "model.units": "[64, 64]",
        "train.epochs": args.epochs,
        "train.batch_size": 32,
    }
    tags = {
        "role": "job",
        "outcome": "completed",
        "sweep_id": f"/home/user/actlab/{SWEEP}",
        "mlflow.parentRunId": parent,
        "task": "classification",
        "fingerprint": f"{hash(job) % 16**16:016x}",
    }
    run = client.create_run(experiment_id, run_name=f"{activation}-{loss}-digits-s{seed}")
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, "FINISHED")


def build(uri: str, root: Path, args) -> int:
    """The store: one parent run and its jobs; returns how many jobs."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        "digits", artifact_location=(root / "mlartifacts").as_uri()
    )
    parent = client.create_run(
        experiment_id,
        run_name=SWEEP,
        tags={"role": "sweep", "sweep_id": f"/home/user/actlab/{SWEEP}"},
    ).info.run_id
    rates = np.geomspace(0.0003, 0.03, args.rates).round(6).tolist()
    jobs = list(itertools.product(ACTIVATIONS, LOSSES, rates, range(args.seeds)))
    for job in jobs:
        record(client, experiment_id, parent, job, args)
    client.set_terminated(parent, "FINISHED")
    return len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", help="reuse (or build once into) this SQLite file")
    parser.add_argument(
        "compare", nargs="*", help="extra options for runner.compare, after --: -- --pairs all"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = Path(args.store).resolve() if args.store else root / "mlflow.db"
        uri = f"sqlite:///{db}"
        if not db.exists():
            start = time.perf_counter()
            runs = build(uri, db.parent, args)
            print(f"built {runs} runs in {time.perf_counter() - start:.1f} s")
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
        command = [sys.executable, "-m", "runner.compare", "--out", str(root / "out")]
        command += args.compare
        walls, cpus = [], []
        for _ in range(args.repeats):
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
            if result.returncode != 0:
                raise SystemExit(f"runner.compare failed:\n{result.stdout}{result.stderr}")
        print(result.stdout.splitlines()[0])
        median = sorted(walls)[len(walls) // 2]
        print(
            f"python -m runner.compare {' '.join(args.compare)}: wall "
            + ", ".join(f"{w:.2f}" for w in walls)
            + " s; CPU "
            + ", ".join(f"{c:.2f}" for c in cpus)
            + f" s; median wall {median:.2f} s"
        )


if __name__ == "__main__":
    main()
