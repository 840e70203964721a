"""Early stopping's cost in a fused group: the same group trained with it off, on, and on
with ``restore_best``, side by side in one process.

The group: 4 activations x 2 losses x ``--seeds`` seeds on digits, hidden [128, 64],
batch 32, Adam 0.001, diagnostics on, ``--epochs`` epochs, trained by
``runner.engine.train`` on JAX as one fused batch. With early stopping on, its patience
is longer than the training, so every member trains every epoch and the epochs compare:
what is measured is the rule's bookkeeping each epoch (and, with ``restore_best``, keeping
each member's best weights on the device). The three variants share one compiled program
and their models are built once; after a warm-up of each, they train in turn, short
trainings over many rounds (``--repeats`` of ``--epochs``), each round in another order,
so that the load of whatever else the machine runs falls on all three alike. A training's
time is the median of its epochs from the second on. Printed: each variant's median over
the rounds, and the median over the rounds of its ratio to the group without early
stopping in the same round.

    python bench/early_stopping.py [--seeds 3] [--epochs 8] [--repeats 25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu")
LOSSES = ("mse", "categorical_crossentropy")
UNITS = (128, 64)


def _members(dataset, seeds: int, rule):
    """The group's members, each with early stopping ``rule`` (None: off)."""
    from runner import engine, model
    from runner.config import Encoding

    members = []
    for activation in ACTIVATIONS:
        for loss in LOSSES:
            for seed in range(seeds):
                head = model.OutputHead(10, "softmax", Encoding.onehot)
                spec = model.ModelSpec(units=UNITS, activations=(activation,) * 2, head=head)
                net = model.build_model(spec, dataset.features, seed)
                members.append(
                    engine.Member(
                        net, spec, loss, Encoding.onehot, 0.001, seed, early_stopping=rule
                    )
                )
    return members


def _epoch_seconds(dataset, members, settings, programs) -> list[float]:
    """The wall time of each epoch of one training of the group, from the second on."""
    from runner import engine

    stamps: list[float] = []

    def stamp(m: int, *_) -> None:
        if m == 0:
            stamps.append(time.perf_counter())

    engine.train(members, dataset, settings, stamp, programs)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()

    # Fused groups are JAX's.
    os.environ["KERAS_BACKEND"] = "jax"
    from omegaconf import OmegaConf

    from runner import data, engine
    from runner.config import DatasetConfig

    dataset = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    never = args.epochs + 1
    variants = {
        "off": None,
        "on": engine.EarlyStopping("val_loss", never, 0.0, restore_best=False),
        "on, restore_best": engine.EarlyStopping("val_loss", never, 0.0, restore_best=True),
    }
    settings = engine.Settings(engine.OptimizerKind("adam"), args.epochs, 32, 256)
    programs: dict = {}
    # Built once: a training copies the weights to the device and leaves the models be.
    groups = {name: _members(dataset, args.seeds, rule) for name, rule in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(groups)
    for round_ in range(args.repeats + 1):
        # Each round in another order: no variant always follows the same one.
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            seconds = _epoch_seconds(dataset, groups[name], settings, programs)
            if round_:  # the first round warms up: compiling, the first allocations
                times[name].append(statistics.median(seconds))
    models = len(ACTIVATIONS) * len(LOSSES) * args.seeds
    print(f"{models} models fused, {args.repeats} rounds of {args.epochs} epochs")
    print(
        "| early stopping | ms an epoch (median) | against off, the rounds' median |\n"
        "| --- | ---: | ---: |"
    )
    for name, samples in times.items():
        ratios = [t / off for t, off in zip(samples, times["off"], strict=True)]
        cost = 100 * (statistics.median(ratios) - 1)
        print(f"| {name} | {1000 * statistics.median(samples):.2f} | {cost:+.1f}% |")


if __name__ == "__main__":
    main()
