"""A fused group's epoch against the floor, side by side: ``--models`` digits MLPs trained
as one by the runner's JAX engine, and the same number in hand-written JAX (bench/floor.py).

The runner's members are those of a fused sweep: [128, 64] (``--units``), softmax,
categorical cross-entropy, Adam at 0.001, batch 32, seeds 0..N-1, each member its own
initial weights drawn from one shared Keras model as the fused launcher draws them
(``runner.model.initial_values``), trained by ``runner.engine.train``; with diagnostics (a
probe of 256, the default) and without. ``--activations relu`` (the default) matches the
floor's model; ``sigmoid,tanh,relu,elu`` splits the members into the four families of
bench/sweep_scaling.py's sweep (the floor stays relu). Each measurement is a process of its
own, in turn, ``--repeats`` rounds; each time is the median epoch from the second on, and
the median over the rounds.

    python bench/fused_floor.py [--models 512] [--epochs 6] [--repeats 2]
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


def _runner(models: int, epochs: int, units: list[int], activations: list[str], probe) -> float:
    """The median seconds of a fused epoch of ``models`` members."""
    from omegaconf import OmegaConf

    from runner import data, engine, model
    from runner.config import DatasetConfig, Encoding

    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    head = model.OutputHead(10, "softmax", Encoding.onehot)
    shared, members = {}, []
    for i in range(models):
        activation = activations[i % len(activations)]
        spec = model.ModelSpec(
            units=tuple(units), activations=(activation,) * len(units), head=head
        )
        if spec not in shared:
            shared[spec] = model.build_model(spec, ds.features, seed=i)
            initial = None
        else:
            initial = model.initial_values(shared[spec], spec, i)
        members.append(
            engine.Member(
                shared[spec], spec, "categorical_crossentropy", Encoding.onehot, 0.001, i,
                initial=initial,
            )
        )  # fmt: skip
    settings = engine.Settings(engine.OptimizerKind("adam"), epochs, 32, probe)
    ends: list[float] = []

    def on_epoch(member: int, epoch: int, logs: dict) -> None:
        if member == 0:
            ends.append(time.perf_counter())

    engine.train(members, ds, settings, on_epoch)
    return statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False))


def inner(kind: str, args: argparse.Namespace) -> None:
    units = [int(u) for u in args.units.split(",")]
    if kind == "floor":
        from bench.floor import run

        seconds = run(args.models, args.epochs, units, "cpu")["ms_per_epoch"] / 1000
    else:
        probe = 256 if kind == "runner" else None
        seconds = _runner(args.models, args.epochs, units, args.activations.split(","), probe)
    print(json.dumps({kind: seconds}))


KINDS = ("runner", "runner, no diagnostics", "floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--units", default="128,64")
    parser.add_argument("--activations", default="relu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--inner", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args)
        return
    seconds: dict[str, list[float]] = {}
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    options = ["--models", str(args.models), "--epochs", str(args.epochs), "--units",
               args.units, "--activations", args.activations]  # fmt: skip
    for _ in range(args.repeats):
        for kind in KINDS:
            done = subprocess.run(
                [sys.executable, __file__, "--inner", kind, *options],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            for name, value in json.loads(done.stdout.splitlines()[-1]).items():
                seconds.setdefault(name, []).append(value)
    ms = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    print(
        f"{args.models} digits MLPs [{args.units}] ({args.activations}), batch 32, "
        f"{args.epochs} epochs, median of {args.repeats}"
    )
    print(f"{'':24s} {'ms/epoch':>9s} {'ms/model-epoch':>15s} {'/ floor':>8s}")
    for name in KINDS:
        per = ms[name] / args.models
        print(f"{name:24s} {ms[name]:9.1f} {per:15.3f} {ms[name] / ms['floor']:7.2f}x")


if __name__ == "__main__":
    main()
