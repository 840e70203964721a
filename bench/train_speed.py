"""Training speed: the runner's training against a tutorial-style Keras script and a
hand-written ``tf.function`` loop, side by side in one process.

The digits MLP ([128, 64] relu, softmax, categorical cross-entropy, Adam 0.001), batch 32,
30 epochs, validated every epoch, the same split for all three:

- tutorial: ``model.compile(...)`` defaults, ``model.fit(x, y, validation_data=...)``;
- runner: ``runner.train.train`` with the runner's defaults (diagnostics on);
- loop: a ``tf.function`` train step over a prefetched ``tf.data`` pipeline, and one
  forward pass on the validation split per epoch.

Each is run ``--repeats`` times in turn; the medians of the fit time per epoch and the
ratios are printed, with each one's test accuracy.

    python bench/train_speed.py [--repeats 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from runner.diagnostics import Diagnostics  # noqa: E402

from runner import data, model, train  # noqa: E402
from runner.config import DatasetConfig, Encoding, OptimizerConfig  # noqa: E402

UNITS = [128, 64]
BATCH = 32


def mlp(features: int) -> keras.Model:
    head = model.OutputHead(10, "softmax", Encoding.onehot)
    return model.build_model(features, UNITS, ["relu"] * len(UNITS), head)


def tutorial(splits, epochs: int) -> tuple[float, float]:
    x, y, xv, yv, xt, yt = splits
    net = mlp(x.shape[1])
    net.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    start = time.perf_counter()
    net.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - start
    return seconds, net.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]


def runner(splits, epochs: int) -> tuple[float, float]:
    net = mlp(splits[0].shape[1])
    probe = Diagnostics(splits[0][:256], splits[1][:256], "categorical_crossentropy", ["relu"] * 2)
    result = train.train(
        net,
        "categorical_crossentropy",
        OmegaConf.structured(OptimizerConfig(name="adam")),
        data.CLASSIFICATION,
        Encoding.onehot,
        splits,
        epochs,
        BATCH,
        seed=0,
        steps_per_execution=64,
        callbacks=[probe],
    )
    return result.train_seconds, result.test["test_accuracy"]


def loop(splits, epochs: int) -> tuple[float, float]:
    x, y, xv, yv, xt, yt = splits
    net = mlp(x.shape[1])
    optimizer = keras.optimizers.Adam(0.001)
    loss_fn = keras.losses.CategoricalCrossentropy()
    batches = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0, reshuffle_each_iteration=True)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, net(xb, training=True))
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            step(xb, yb)
        float(loss_fn(yv, net(xv, training=False)))
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(net(xt), axis=1) == np.argmax(yt, axis=1)))
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    splits = data.encoded_splits(ds, Encoding.onehot)
    contenders = {"tutorial": tutorial, "runner": runner, "loop": loop}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    accuracy: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(args.repeats + 1):
        for name, fit in contenders.items():
            keras.backend.clear_session()
            keras.utils.set_random_seed(repeat)
            took, acc = fit(splits, args.epochs)
            if repeat:  # the first round warms TensorFlow up and is not counted
                seconds[name].append(took / args.epochs)
                accuracy[name].append(acc)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"digits MLP {UNITS}, batch {BATCH}, {args.epochs} epochs, median of {args.repeats}")
    print(f"{'':10s} {'ms/epoch':>9s} {'test accuracy':>14s}")
    for name in contenders:
        acc = statistics.mean(accuracy[name])
        print(f"{name:10s} {median[name] * 1000:9.1f} {acc:14.4f}")
    print(f"tutorial / runner: {median['tutorial'] / median['runner']:.2f}x  (target >= 2.0)")
    print(f"runner / loop:     {median['runner'] / median['loop']:.2f}x  (target <= 1.15)")


if __name__ == "__main__":
    main()
