"""CNN speed on JAX: the runner's epoch against a hand-written ``jax.numpy`` CNN of the same
shape, and a fused group of small CNNs against the same models trained one after another,
side by side in one process.

The CNN (``model=cnn``): mnist5k (3000 training images of 28x28x1, 1000 to validate), two
conv blocks ``Conv2D(f, 3, padding="same")``, relu, 2x2 max pooling, then Flatten, Dense,
softmax; categorical cross-entropy, Adam 0.001, batch 32, validated every epoch.

- runner: ``runner.engine.train`` on one model of filters [16, 32] and units [64], the
  per-layer diagnostics on (the default) and off;
- floor: the same model on the same batches (``runner.engine.batch_orders``), validated
  the same way, in plain ``jax.numpy`` and ``jax.lax`` convolutions, one ``jax.jit``
  epoch, a ``lax.scan`` over the batches;
- fused: ``--models`` small CNNs (filters [8, 16], units [32], seeds 0..N-1) in one
  ``runner.engine.train`` call, against the same models trained one after another in
  this process (they share one compiled program, as a sweep's jobs do).

Each time is the median epoch from the second on (the first compiles). Prints ms per
epoch and the ratios: runner / floor (target <= 2.5) and fused / one after another
(target <= 0.6).

    python bench/cnn_speed.py [--epochs 5] [--models 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

BATCH = 32
RATE = 0.001


def _dataset():
    from omegaconf import OmegaConf

    from runner import data
    from runner.config import DatasetConfig

    return data.load(OmegaConf.structured(DatasetConfig(name="mnist5k", scale="none")))


def _spec(filters, units, image_shape):
    from runner import model
    from runner.config import Encoding

    head = model.OutputHead(10, "softmax", Encoding.onehot)
    layers = len(filters) + len(units)
    return model.ModelSpec(
        units=tuple(units),
        filters=tuple(filters),
        image_shape=image_shape,
        activations=("relu",) * layers,
        head=head,
    )


def runner_epochs(ds, filters, units, epochs: int, seeds: list[int], probe, together: bool):
    """Train one model per seed with the runner's engine, together or one after another;
    the median epoch (of the group, or of each model summed), and the mean test accuracy."""
    import keras

    from runner import engine, model
    from runner.config import Encoding

    keras.backend.clear_session()
    spec = _spec(filters, units, ds.image_shape)
    members = [
        engine.Member(
            model.build_model(spec, ds.features, seed),
            spec,
            "categorical_crossentropy",
            Encoding.onehot,
            RATE,
            seed,
        )
        for seed in seeds
    ]
    settings = engine.Settings(engine.OptimizerKind("adam"), epochs, BATCH, probe)
    programs: dict = {}
    batches = [members] if together else [[m] for m in members]
    total, accuracy = 0.0, []
    for batch in batches:
        stamps: list[float] = []

        def on_epoch(m, epoch, logs, stamps=stamps):
            if m == 0:
                stamps.append(time.perf_counter())

        results = engine.train(batch, ds, settings, on_epoch, programs)
        total += statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
        accuracy += [r.test["test_accuracy"] for r in results]
    return total, statistics.mean(accuracy)


def floor_epochs(ds, filters, units, epochs: int) -> tuple[float, float]:
    """The same CNN in hand-written JAX: the median epoch and the last validation accuracy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from runner import data
    from runner.config import Encoding
    from runner.engine import batch_orders

    x, y, xv, yv, _, _ = data.encoded_splits(ds, Encoding.onehot)
    x, xv = (a.reshape(-1, *ds.image_shape) for a in (x, xv))
    x, y, xv, yv = jax.device_put((x, y, xv, yv))
    rng = np.random.default_rng(0)

    def glorot(shape, fan_in, fan_out):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)

    params, channels, side = [], ds.image_shape[-1], ds.image_shape[0]
    for f in filters:
        params.append((glorot((3, 3, channels, f), 9 * channels, 9 * f), np.zeros(f, np.float32)))
        channels, side = f, -(-side // 2)
    widths = [side * side * channels, *units, 10]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        params.append((glorot((a, b), a, b), np.zeros(b, np.float32)))

    def forward(params, h):
        for kernel, bias in params[: len(filters)]:
            h = jax.lax.conv_general_dilated(
                h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = jax.nn.relu(h + bias)
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        h = h.reshape(h.shape[0], -1)
        for kernel, bias in params[len(filters) : -1]:
            h = jax.nn.relu(h @ kernel + bias)
        kernel, bias = params[-1]
        return jax.nn.softmax(h @ kernel + bias)

    def loss_fn(params, xb, yb):
        p = jnp.clip(forward(params, xb), 1e-7, 1 - 1e-7)
        return -jnp.mean(jnp.sum(yb * jnp.log(p), axis=-1))

    def step(state, rows):
        params, m, v, t = state
        grads = jax.grad(loss_fn)(params, x[rows], y[rows])
        t = t + 1
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        rate = RATE * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree.map(lambda p, a, b: p - rate * a / (jnp.sqrt(b) + 1e-7), params, m, v)
        return (params, m, v, t), None

    @jax.jit
    def epoch(state, order):
        full = order.shape[0] // BATCH * BATCH
        state, _ = jax.lax.scan(step, state, order[:full].reshape(-1, BATCH))
        if full < order.shape[0]:
            state, _ = step(state, order[full:])
        val = forward(state[0], xv)
        return state, jnp.mean(jnp.argmax(val, -1) == jnp.argmax(yv, -1))

    zeros = jax.tree.map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.zeros(()))
    orders = batch_orders(len(ds.x_train), 0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        state, accuracy = epoch(state, next(orders))
        accuracy = float(accuracy)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", type=int, default=16)
    args = parser.parse_args()
    ds = _dataset()
    big, small = ([16, 32], [64]), ([8, 16], [32])
    rows = {
        "runner, diagnostics on": runner_epochs(ds, *big, args.epochs, [0], 256, True),
        "runner, diagnostics off": runner_epochs(ds, *big, args.epochs, [0], None, True),
        "floor": floor_epochs(ds, *big, args.epochs),
    }
    seeds = list(range(args.models))
    rows[f"{args.models} small, fused"] = runner_epochs(ds, *small, args.epochs, seeds, 256, True)
    rows[f"{args.models} small, one after another"] = runner_epochs(
        ds, *small, args.epochs, seeds, 256, False
    )
    print(f"mnist5k CNN, batch {BATCH}, {args.epochs} epochs, JAX on the CPU")
    print(f"{'':34s} {'ms/epoch':>9s} {'accuracy':>9s}")
    for name, (seconds, accuracy) in rows.items():
        print(f"{name:34s} {seconds * 1000:9.1f} {accuracy:9.4f}")
    print("(accuracy: test for the runner, mean over the models; validation for the floor)")
    floor = rows["floor"][0]
    on, off = rows["runner, diagnostics on"][0], rows["runner, diagnostics off"][0]
    print(f"runner / floor: {on / floor:.2f}x (target <= 2.5); diagnostics off: {off / floor:.2f}x")
    fused = rows[f"{args.models} small, fused"][0]
    apart = rows[f"{args.models} small, one after another"][0]
    print(f"fused / one after another: {fused / apart:.2f}x (target <= 0.6)")


if __name__ == "__main__":
    main()
