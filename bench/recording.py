"""What recording a run costs, against its floor through MLflow's public client.

Both record ``--runs`` runs, each with the params, the per-epoch metrics (``--epochs``
epochs of a digits job's 13 values: loss, accuracy and the diagnostics, training and
validation) and the test metrics of a fused sweep's job, into a fresh SQLite store:

- floor: ``MlflowClient.create_run`` with the run's tags, one ``log_batch`` with its params,
  metrics and its outcome tag, ``set_terminated``: what any recording of the same values
  must do, in three store calls;
- runner: the tracking package as a fused group records its runs
  (``Tracker.open_run``, then what ``runner.jobs.record.JobRecord`` logs, then the run's
  end), the runs of the group side by side as the engine hands each epoch over.

Printed: seconds a run for each, median over ``--repeats`` rounds in turn, and the ratio.

    python bench/recording.py [--runs 48] [--epochs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EPOCH_METRICS = (
    "loss", "accuracy", "val_loss", "val_accuracy",
    *(f"{kind}/hidden_{i}" for kind in ("grad_norm", "dead_fraction") for i in range(2)),
    "grad_norm/hidden_2", "dead_fraction/hidden_2", "saturated_fraction/hidden_0",
    "saturated_fraction/hidden_1", "saturated_fraction/hidden_2",
)  # fmt: skip


def params(i: int) -> dict[str, object]:
    """A digits job's params, about as many as the runner logs (the flattened config)."""
    flat = {f"dataset.{k}": v for k, v in (("name", "digits"), ("test_size", 0.2), ("seed", 0))}
    flat.update({f"train.{k}": v for k, v in (("epochs", 20), ("batch_size", 32))})
    flat.update({"model.units": "[128, 64]", "activation": "relu", "loss": "mse", "seed": i})
    flat.update({f"key_{j}": j for j in range(30)})
    return flat


def floor(uri: str, runs: int, epochs: int) -> float:
    """Seconds a run, recorded in three calls of MLflow's client."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("floor")
    start = time.perf_counter()
    for i in range(runs):
        run = client.create_run(experiment, run_name=f"job-{i}", tags={"role": "job"})
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(name, float(np.random.rand()), stamp, epoch)
            for epoch in range(epochs)
            for name in EPOCH_METRICS
        ] + [Metric("test_accuracy", 0.9, stamp, 0), Metric("train_seconds", 0.1, stamp, 0)]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in params(i).items()],
            tags=[RunTag("outcome", "completed")],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    return (time.perf_counter() - start) / runs


def runner(uri: str, runs: int, epochs: int, folder: Path) -> float:
    """Seconds a run, recorded as a fused group's runs are."""
    from runner.tracking import Tracker

    tracker = Tracker(uri)
    experiment = tracker.experiment("runner")
    splits = {
        part: (np.random.rand(n, 64).astype("f4"), np.arange(n) % 10)
        for part, n in (("train", 1077), ("validation", 360), ("test", 360))
    }
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        opened = [
            stack.enter_context(
                tracker.open_run(experiment, f"job-{i}", {"fingerprint": str(i)}, None, folder)
            )
            for i in range(runs)
        ]
        for i, run in enumerate(opened):
            run.log_params(params(i))
            run.log_inputs("digits", {"loader": "sklearn.datasets.load_digits"}, splits)
            run.log_texts({"config.yaml": "seed: 0\n", "overrides.yaml": "[]\n"})
        for epoch in range(epochs):
            for run in opened:
                run.log_metrics({n: float(np.random.rand()) for n in EPOCH_METRICS}, step=epoch)
        for run in opened:
            run.log_metrics({"test_accuracy": 0.9, "train_seconds": 0.1})
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"floor": [], "runner": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in seconds:
                folder = Path(tmp, f"{name}-{repeat}")
                folder.mkdir()
                uri = f"sqlite:///{folder / 'mlflow.db'}"
                # The store's tables exist before the clock starts, as a user's store would.
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=uri).search_experiments()
                if name == "floor":
                    seconds[name].append(floor(uri, args.runs, args.epochs))
                else:
                    seconds[name].append(runner(uri, args.runs, args.epochs, folder))
    floor_s, runner_s = (statistics.median(seconds[n]) for n in ("floor", "runner"))
    print(f"{args.runs} runs of {args.epochs} epochs, median of {args.repeats}:")
    print(f"floor (create, one batch, terminate): {1000 * floor_s:6.1f} ms a run")
    print(f"runner (the tracking package):        {1000 * runner_s:6.1f} ms a run")
    print(f"runner / floor: {runner_s / floor_s:.2f}x  (target <= 1.2)")


if __name__ == "__main__":
    main()
