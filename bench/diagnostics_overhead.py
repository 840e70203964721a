"""How much the per-layer diagnostics add to training time, on the default digits run.

Trains the default model (digits, [64, 64] relu, categorical cross-entropy, 20 epochs,
batch 32) with diagnostics on and off, alternating, in one process, and prints the median
``fit`` time of each and their ratio.

    python bench/diagnostics_overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from runner import data, job, model, train  # noqa: E402
from runner.config import hidden_activations, register  # noqa: E402

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")


def fit_seconds(cfg, dataset, encoded, head) -> float:
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    net = model.build_model(dataset.features, list(cfg.model.units), hidden_activations(cfg), head)
    result = train.train(
        net,
        cfg.loss.name,
        cfg.optimizer,
        dataset.task,
        head.encoding,
        encoded,
        cfg.train.epochs,
        cfg.train.batch_size,
        seed=cfg.seed,
        steps_per_execution=cfg.train.steps_per_execution,
        callbacks=job.diagnostics(cfg, encoded[0], encoded[1]),
    )
    return result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    register()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        cfgs = {on: compose("config", [f"diagnostics.enabled={on}"]) for on in ("true", "false")}
    dataset = data.load(cfgs["true"].dataset)
    head = model.output_head(cfgs["true"].loss, "auto", dataset.task, dataset.classes)
    splits = (dataset.y_train, dataset.y_val, dataset.y_test)
    ys = [data.encode_targets(y, head.encoding, dataset.classes) for y in splits]
    encoded = (dataset.x_train, ys[0], dataset.x_val, ys[1], dataset.x_test, ys[2])
    times: dict[str, list[float]] = {"true": [], "false": []}
    fit_seconds(cfgs["false"], dataset, encoded, head)  # warm-up: TensorFlow's first graphs
    for _ in range(args.repeats):
        for on in ("true", "false"):
            times[on].append(fit_seconds(cfgs[on], dataset, encoded, head))
    on, off = statistics.median(times["true"]), statistics.median(times["false"])
    print(f"fit time, median of {args.repeats}: diagnostics on {on:.3f} s, off {off:.3f} s")
    print(f"ratio on/off: {on / off:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
