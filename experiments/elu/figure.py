"""The elu report's figure: training loss per epoch (mean over seeds, band: their range),
and the median activation per epoch of the first, a middle and the last hidden layer.
runner.compare draws validation curves; the paper plots training loss. Reads every job run
of the experiment ``elu`` in the store (the report's store holds its one sweep).

    python experiments/elu/figure.py [--uri URI]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

METRICS = ["loss", "median_activation/hidden_0", "median_activation/hidden_3",
           "median_activation/hidden_7"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=None)
    parser.add_argument("--out", default="experiments/elu/training.png")
    args = parser.parse_args()
    if args.uri:
        mlflow.set_tracking_uri(args.uri)
    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["elu"])
    runs = runs[runs["params.activation"].notna()]
    figure, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    for activation, group in runs.groupby("params.activation"):
        label = activation.rsplit(":", 1)[-1]
        for ax, metric in zip(axes, METRICS, strict=True):
            histories = [client.get_metric_history(r, metric) for r in group["run_id"]]
            curves = np.array(
                [[m.value for m in sorted(h, key=lambda m: m.step)] for h in histories]
            )
            epochs = np.arange(1, curves.shape[1] + 1)
            ax.plot(epochs, curves.mean(0), label=f"{label} (n={len(curves)})")
            ax.fill_between(epochs, curves.min(0), curves.max(0), alpha=0.25)
    for ax, metric in zip(axes, METRICS, strict=True):
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss: mean over seeds, band: their range")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
