"""``--at best``: each run summarised at its best validation epoch rather than its last.

The best epoch is chosen on a validation metric only (the compared metric's ``val_`` twin,
else ``val_loss``), never on a test metric. A per-epoch metric is then taken at that epoch.
A test metric is measured once, after training: it is of the best epoch's weights only
where the run restored them (``train.early_stopping.restore_best``), and of the last
epoch's weights otherwise; the note under the table says which, run by run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from runner.compare.runs import Histories, outcomes
from runner.compare.table import curve_metric
from runner.config import UserError
from runner.metrics import lower_is_better
from runner.tracking import COMPLETED

LAST, BEST = "last", "best"
# The param a run records when its test metrics are those of its best epoch's weights.
RESTORED = "params.train.early_stopping.restore_best"
FALLBACK = "val_loss"


def monitor_for(metric: str, logged: list[str]) -> str:
    """The validation metric that picks each run's best epoch for ``metric``: its ``val_``
    twin (``val_accuracy`` for ``test_accuracy``), else ``val_loss``. Raises
    :class:`UserError` when the runs logged neither."""
    twin = curve_metric(metric, logged)
    if twin.startswith("val_"):
        return twin
    if FALLBACK in logged:
        return FALLBACK
    raise UserError(
        f"--at best picks each run's epoch on a validation metric, and the runs logged neither "
        f"a val_ twin of {metric} nor {FALLBACK}"
    )


def best_epochs(histories: Histories, runs: pd.DataFrame, monitor: str) -> pd.Series:
    """Each completed run's best epoch index by ``monitor`` (its lowest value for a loss or
    an error, its highest otherwise; the first of equal values, as Keras's early stopping
    keeps the first), by run id."""
    history = histories.of(runs, [], monitor).dropna(subset=["value"])
    sign = 1 if lower_is_better(monitor) else -1
    ranked = history.assign(key=sign * history["value"]).sort_values(["run", "key", "step"])
    return ranked.drop_duplicates("run").set_index("run")["step"].astype(int)


def _restored(runs: pd.DataFrame) -> pd.Series:
    """Whether each run's test metrics are those of its restored best weights."""
    if RESTORED not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs[RESTORED].astype(str).str.lower().eq("true")


def at_best(
    histories: Histories, runs: pd.DataFrame, metric: str, logged: list[str]
) -> tuple[pd.DataFrame, str, str]:
    """The runs with ``metric`` at each one's best validation epoch (:func:`best_epochs`),
    the label of the metric for the heading, and the sentence that says how it was taken."""
    monitor = monitor_for(metric, logged)
    epochs = best_epochs(histories, runs, monitor)
    done = runs[outcomes(runs) == COMPLETED]
    found = epochs.reindex(done["run_id"]).dropna().to_numpy() + 1
    span = (
        f"epochs {int(found.min())} to {int(found.max())}, median {np.median(found):g}"
        if len(found)
        else "no completed run"
    )
    chosen = (
        f"Each run at its best epoch by `{monitor}` "
        f"({'lowest' if lower_is_better(monitor) else 'highest'}; chosen on validation "
        f"only, never on a test metric): {span}."
    )
    history = histories.of(runs, [], metric)
    if metric.startswith("test_"):
        restored = _restored(done)
        sentence = (
            f"{chosen} `{metric}` is measured once, after training: of the restored best "
            f"weights in {int(restored.sum())} of {len(done)} completed runs "
            "(`train.early_stopping.restore_best`), of the last epoch's weights in the others."
        )
        return runs, f"{metric} (best epoch by {monitor})", sentence
    if history.empty or history["step"].max() == 0:
        sentence = f"{chosen} `{metric}` is logged once a run, and is taken as it is."
        return runs, f"{metric} (best epoch by {monitor})", sentence
    at = history.set_index(["run", "step"])["value"]
    keys = pd.MultiIndex.from_arrays([runs["run_id"], runs["run_id"].map(epochs)])
    values = at.reindex(keys).to_numpy(dtype=float)
    runs = runs.assign(**{f"metrics.{metric}": values})
    return runs, f"{metric} at its best epoch by {monitor}", f"{chosen} `{metric}` at that epoch."
