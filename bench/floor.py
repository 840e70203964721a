"""The floor: what training the runner's MLP costs in hand-written JAX, with nothing else.

The same model as the runner's default job on digits (hidden layers of ``--units``, relu,
softmax output, categorical cross-entropy, Adam at 0.001, batch 32), on the same batches
(``runner.engine.batch_orders``), validated on the whole validation split after every epoch,
written as plain ``jax.numpy``: one ``jax.jit`` epoch, its state donated to the next, a
``lax.scan`` over the batches, the last partial batch padded to a full one whose padding
weighs nothing (one compiled step, as the runner's engine does). ``--models N`` trains N
such models at once, ``vmap``-ed over stacked weights (seeds 0..N-1): the floor of a fused
sweep of N jobs.

Prints the median ms per epoch (the first, compiling, epoch not counted), per model too, and
the device. ``--json`` prints one JSON line for the other bench scripts.

    python bench/floor.py [--models 1] [--epochs 20] [--units 64,64] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 32
RATE = 0.001


def run(models: int, epochs: int, units: list[int], device: str) -> dict:
    """Train ``models`` MLPs for ``epochs`` epochs; the per-epoch times and the result."""
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    # runner.engine imports Keras, whose backend is read then.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp
    import numpy as np
    from omegaconf import OmegaConf

    from runner import data
    from runner.config import DatasetConfig, Encoding
    from runner.engine import batch_orders

    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    x, y, xv, yv, _, _ = data.encoded_splits(ds, Encoding.onehot)
    x, y, xv, yv = jax.device_put((x, y, xv, yv))
    widths = [x.shape[1], *units, y.shape[1]]

    def init(seed: int) -> list:
        rng = np.random.default_rng(seed)
        params = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            limit = np.sqrt(6 / (fan_in + fan_out))
            kernel = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
            params.append((kernel, np.zeros(fan_out, np.float32)))
        return params

    def forward(params, xb):
        h = xb
        for kernel, bias in params[:-1]:
            h = jax.nn.relu(h @ kernel + bias)
        kernel, bias = params[-1]
        return jax.nn.softmax(h @ kernel + bias)

    def loss_fn(params, xb, yb, real=None):
        p = jnp.clip(forward(params, xb), 1e-7, 1 - 1e-7)
        per_sample = -jnp.sum(yb * jnp.log(p), axis=-1)
        if real is None:
            return jnp.mean(per_sample)
        return jnp.sum(jnp.where(real, per_sample, 0)) / jnp.sum(real)

    def step(state, batch):
        rows, count = batch
        params, m, v, t = state
        real = jnp.arange(BATCH) < count
        loss, grads = jax.value_and_grad(loss_fn)(params, x[rows], y[rows], real)
        t = t + 1
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        rate = RATE * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        params = jax.tree.map(lambda p, a, b: p - rate * a / (jnp.sqrt(b) + 1e-7), params, m, v)
        return (params, m, v, t), loss

    def epoch(state, order):
        rest = order.shape[0] % BATCH
        counts = [BATCH] * (order.shape[0] // BATCH)
        if rest:
            order, counts = jnp.concatenate([order, order[: BATCH - rest]]), [*counts, rest]
        batches = (order.reshape(-1, BATCH), jnp.asarray(counts))
        state, losses = jax.lax.scan(step, state, batches)
        val = forward(state[0], xv)
        accuracy = jnp.mean(jnp.argmax(val, -1) == jnp.argmax(yv, -1))
        return state, (jnp.mean(losses), loss_fn(state[0], xv, yv), accuracy)

    stacked = jax.tree.map(lambda *p: jnp.stack(p), *[init(seed) for seed in range(models)])
    m, v = (jax.tree.map(jnp.zeros_like, stacked) for _ in range(2))  # donated: two buffers
    state = (stacked, m, v, jnp.zeros(models))
    train_epoch = jax.jit(jax.vmap(epoch), donate_argnums=0)
    orders = [batch_orders(len(ds.x_train), seed) for seed in range(models)]
    times = []
    for _ in range(epochs):
        order = np.stack([next(o) for o in orders])
        start = time.perf_counter()
        state, logs = train_epoch(state, order)
        logs = jax.device_get(logs)
        times.append(time.perf_counter() - start)
    ms = statistics.median(times[1:]) * 1000
    return {
        "device": str(jax.devices()[0]),
        "models": models,
        "ms_per_epoch": ms,
        "ms_per_model_epoch": ms / models,
        "first_epoch_s": times[0],
        "val_accuracy": float(np.mean(logs[2])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--units", default="64,64", help="hidden widths, comma-separated")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    args = parser.parse_args()
    units = [int(u) for u in args.units.split(",")]
    result = run(args.models, args.epochs, units, args.device)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"floor: {result['models']} model(s) [{args.units}] on {result['device']}: "
        f"{result['ms_per_epoch']:.2f} ms/epoch, {result['ms_per_model_epoch']:.4f} ms per "
        f"model-epoch (first epoch, compiling: {result['first_epoch_s']:.2f} s); mean "
        f"val_accuracy {result['val_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
