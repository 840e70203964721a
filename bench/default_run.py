"""The whole default job against its floor: what any Keras-on-JAX program pays to start.

- runner: ``python -m runner`` (digits, [64, 64] relu, 20 epochs, tracked into a SQLite
  store of its own, created before the clock starts), as a user runs it;
- floor: ``python -c "import keras, jax.numpy as jnp; jnp.ones(3).block_until_ready()"``
  with ``KERAS_BACKEND=jax``: Keras's import and JAX's start, which no such program can
  avoid;
- keras fit: a plain Keras ``fit`` script that trains the same model on the same split for
  20 epochs and logs the same params and per-epoch metrics to MLflow the usual way
  (``mlflow.start_run``, ``log_params``, ``log_metric`` an epoch), for the record.

Each a fresh process, in turn, ``--pairs`` times after one warm-up each (the OS's file
cache, JAX's compilation cache and the kept programs filled, as a user's earlier runs
would have). Printed: the median CPU seconds (user + system, the process and its
children) and wall seconds of each, and the ratios.

With ``--parts``, the runner's gap over the floor part by part, as more of what it does
is added to the floor's process: Hydra and the runner's own modules, scikit-learn's
data, MLflow's import, then the whole job untracked (``tracking.enabled=false``).

    python bench/default_run.py [--pairs 5] [--parts]
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

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "import keras, jax.numpy as jnp; jnp.ones(3).block_until_ready()"
KERAS_FIT = """
import sys
import keras, mlflow, numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

mlflow.set_tracking_uri(sys.argv[1])
x, y = load_digits(return_X_y=True)
x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
x_train, x_val, y_train, y_val = train_test_split(
    x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0
)
scaler = StandardScaler().fit(x_train)
x_train, x_val, x_test = (scaler.transform(p).astype("f4") for p in (x_train, x_val, x_test))
onehot = lambda labels: np.eye(10, dtype="f4")[labels]
model = keras.Sequential(
    [keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
     keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
with mlflow.start_run():
    mlflow.log_params({"activation": "relu", "loss": "categorical_crossentropy",
                       "units": "[64, 64]", "epochs": 20, "batch_size": 32})
    logged = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: mlflow.log_metrics(logs, step=epoch)
    )
    model.fit(x_train, onehot(y_train), validation_data=(x_val, onehot(y_val)), epochs=20,
              batch_size=32, verbose=0, callbacks=[logged])
    loss, accuracy = model.evaluate(x_test, onehot(y_test), verbose=0)
    mlflow.log_metrics({"test_loss": loss, "test_accuracy": accuracy})
"""  # fmt: skip


# Each part: what the floor's process does more, cumulatively.
PARTS = {
    "+ hydra, runner": "; import runner.jobs.outcome",
    "+ data": "; from runner.data.loaders import LOADERS; from sklearn.model_selection import "
    "train_test_split; from sklearn.preprocessing import StandardScaler",
    "+ mlflow": "; import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store",
}


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + system, the command's process tree) and wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _cumulative(part: str) -> str:
    """The code each part up to ``part`` adds to the floor's."""
    names = list(PARTS)
    return "".join(PARTS[name] for name in names[: names.index(part) + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--parts", action="store_true")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = dict(os.environ, KERAS_BACKEND="jax", MLFLOW_DISABLE_TELEMETRY="true")

        def command(name: str, round_: str) -> tuple[list[str], dict[str, str]]:
            store = f"sqlite:///{folder / f'{name}-{round_}.db'}"
            MlflowClient(store).search_experiments()
            if name == "runner":
                run_dir = f"hydra.run.dir={folder / f'{name}-{round_}'}"
                return [sys.executable, "-m", "runner", run_dir], dict(
                    env, MLFLOW_TRACKING_URI=store
                )
            if name == "untracked":
                run_dir = f"hydra.run.dir={folder / f'{name}-{round_}'}"
                untracked = [run_dir, "tracking.enabled=false"]
                return [sys.executable, "-m", "runner", *untracked], env
            if name == "floor":
                return [sys.executable, "-c", FLOOR], env
            if name in PARTS:
                return [sys.executable, "-c", FLOOR + _cumulative(name)], env
            return [sys.executable, "-c", KERAS_FIT, store], env

        names = ("runner", "floor", "keras fit")
        if args.parts:
            names = ("runner", "floor", *PARTS, "untracked")
        for name in names:
            timed(*command(name, "warm"))
        cpu: dict[str, list[float]] = {name: [] for name in names}
        wall: dict[str, list[float]] = {name: [] for name in names}
        for pair in range(args.pairs):
            for name in names:
                seconds = timed(*command(name, str(pair)))
                cpu[name].append(seconds[0])
                wall[name].append(seconds[1])
            shown = ", ".join(f"{n} {cpu[n][-1]:.2f} s cpu {wall[n][-1]:.2f} s" for n in names)
            print(f"pair {pair + 1}: {shown}", flush=True)
    median = {n: (statistics.median(cpu[n]), statistics.median(wall[n])) for n in names}
    for name, (c, w) in median.items():
        print(f"{name:10} median {c:6.2f} s cpu, {w:6.2f} s wall")
    print(f"runner / floor, cpu: {median['runner'][0] / median['floor'][0]:.2f}x (target <= 1.25)")
    if args.parts:
        cpu_of = {name: median[name][0] for name in median}
        hydra, data, mlflow = (cpu_of[part] for part in PARTS)
        gap = {
            "Hydra and the runner's modules": hydra - cpu_of["floor"],
            "scikit-learn's data and splits": data - hydra,
            "the job, untracked (compose, plan, compile, train)": cpu_of["untracked"] - data,
            "MLflow's import": mlflow - data,
            "the store, its records and the figure": cpu_of["runner"]
            - cpu_of["untracked"]
            - (mlflow - data),
        }
        for part, seconds in gap.items():
            print(f"{seconds:+6.2f} s cpu  {part}")
        return
    print(f"keras fit / runner, wall: {median['keras fit'][1] / median['runner'][1]:.2f}x")


if __name__ == "__main__":
    main()
