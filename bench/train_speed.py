"""Training speed: the runner on JAX and on TensorFlow, the floor, and a tutorial-style
Keras script, measured side by side in one run of this script.

The digits MLP ([128, 64] relu, softmax, categorical cross-entropy, Adam 0.001), batch 32,
validated every epoch, the same split for all:

- runner, jax: ``runner.engine.train`` on the JAX backend, diagnostics on (the default);
- floor: ``bench/floor.py``, the same model and batches in hand-written ``jax.jit`` code;
- runner, tensorflow: ``runner.engine.train`` on the TensorFlow backend, diagnostics on;
- tutorial: ``model.compile(...)`` defaults and ``model.fit(x, y, validation_data=...)``,
  on TensorFlow.

A process keeps one Keras backend, so each round runs one process per backend, in turn,
``--repeats`` rounds. Each time is the median of an epoch's wall time from the second epoch
on (the first compiles or traces), per process; then the median over the rounds.

    python bench/train_speed.py [--repeats 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
UNITS = [128, 64]
BATCH = 32


def _spec():
    """The default model: [64, 64] relu, a softmax head for digits' 10 classes."""
    from runner import model
    from runner.config import Encoding

    head = model.OutputHead(10, "softmax", Encoding.onehot)
    return model.ModelSpec(units=tuple(UNITS), activations=("relu",) * len(UNITS), head=head)


def _runner(epochs: int) -> tuple[float, float]:
    import keras
    from omegaconf import OmegaConf

    from runner import data, engine, model
    from runner.config import DatasetConfig, Encoding

    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    keras.backend.clear_session()
    spec = _spec()
    net = model.build_model(spec, ds.features, seed=0)
    member = engine.Member(net, spec, "categorical_crossentropy", Encoding.onehot, 0.001, 0)
    settings = engine.Settings(engine.OptimizerKind("adam"), epochs, BATCH, 256, 64)
    stamps: list[float] = []
    (result,) = engine.train([member], ds, settings, lambda *_: stamps.append(time.perf_counter()))
    epoch = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    return epoch, result.test["test_accuracy"]


def _tutorial(epochs: int) -> tuple[float, float]:
    import keras
    from omegaconf import OmegaConf

    from runner import data, model
    from runner.config import DatasetConfig, Encoding

    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    x, y, xv, yv, xt, yt = data.encoded_splits(ds, Encoding.onehot)
    net = model.build_model(_spec(), x.shape[1], seed=0)
    net.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    stamps: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda *_: stamps.append(time.perf_counter())
    )
    net.fit(
        x, y, validation_data=(xv, yv), epochs=epochs, batch_size=BATCH, verbose=0,
        callbacks=[timer],
    )  # fmt: skip
    epoch = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    return epoch, net.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]


def inner(backend: str, epochs: int) -> None:
    """One process's measurements, as one JSON line."""
    out = {}
    if backend == "jax":
        from bench.floor import run

        out["runner, jax"] = _runner(epochs)
        floor = run(1, epochs, UNITS, "cpu")
        out["floor"] = (floor["ms_per_epoch"] / 1000, floor["val_accuracy"])
    else:
        out["runner, tensorflow"] = _runner(epochs)
        out["tutorial"] = _tutorial(epochs)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--inner", choices=["jax", "tensorflow"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.epochs)
        return
    seconds: dict[str, list[float]] = {}
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):
        for backend in ("jax", "tensorflow"):
            env = dict(
                os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"
            )
            done = subprocess.run(
                [sys.executable, __file__, "--inner", backend, "--epochs", str(args.epochs)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            for name, (epoch, acc) in json.loads(done.stdout.splitlines()[-1]).items():
                seconds.setdefault(name, []).append(epoch)
                accuracy[name] = acc
    ms = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    print(f"digits MLP {UNITS}, batch {BATCH}, {args.epochs} epochs, median of {args.repeats}")
    print(f"{'':20s} {'ms/epoch':>9s} {'accuracy':>9s}")
    for name in ms:
        print(f"{name:20s} {ms[name]:9.2f} {accuracy[name]:9.4f}")
    print("(accuracy: test for the runners and the tutorial, validation for the floor)")
    jax_, tf_, floor = ms["runner, jax"], ms["runner, tensorflow"], ms["floor"]
    print(f"runner jax / floor:          {jax_ / floor:.2f}x  (target <= 2.0)")
    print(f"runner tensorflow / jax:     {tf_ / jax_:.2f}x  (target >= 5)")
    print(f"tutorial / runner tensorflow: {ms['tutorial'] / tf_:.2f}x  (was 2.84x)")


if __name__ == "__main__":
    main()
