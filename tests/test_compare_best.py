"""``python -m runner.compare --at best``: each run summarised at its best validation epoch,
against a real SQLite MLflow store whose runs overfit after a known epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from runner.compare import main
from runner.tracking import STATUS

EPOCHS = 6
# activation, seed, the epoch index of the best val_accuracy, that peak, restore_best.
RUNS = [
    ("relu", 0, 2, 0.90, True),
    ("relu", 1, 3, 0.92, True),
    ("relu", 2, 2, 0.91, True),
    ("tanh", 0, 1, 0.85, False),
    ("tanh", 1, 4, 0.87, False),
    ("tanh", 2, 1, 0.86, False),
]
# What every run's val_accuracy loses per epoch after its peak, and gains per epoch up to it.
DROP, RISE = 0.05, 0.1


def val_accuracy(step: int, peak_step: int, peak: float) -> float:
    """A curve that climbs to ``peak`` at ``peak_step``, then falls as the model overfits."""
    if step <= peak_step:
        return peak - RISE * (peak_step - step)
    return peak - DROP * (step - peak_step)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sweep of :data:`RUNS`: per epoch ``val_accuracy``, ``val_loss`` (1 − it) and a
    training ``accuracy`` that climbs every epoch; then ``test_accuracy`` (0.5 + the run's
    index / 100)."""
    root = tmp_path_factory.mktemp("best")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("digits", artifact_location=(root / "a").as_uri())
    sweep_id = "/home/user/actlab/multirun/2026-12-01/10-00-00"
    client.create_run(
        experiment, run_name="multirun/2026-12-01/10-00-00",
        tags={"role": "sweep", "sweep_id": sweep_id},
    )  # fmt: skip
    for i, (activation, seed, peak_step, peak, restore) in enumerate(RUNS):
        tags = {"role": "job", "outcome": "completed", "sweep_id": sweep_id}
        run = client.create_run(experiment, start_time=1_800_000_000_000 + i, tags=tags)
        metrics = [Metric("test_accuracy", 0.5 + i / 100, 0, 0)]
        for step in range(EPOCHS):
            value = val_accuracy(step, peak_step, peak)
            metrics += [
                Metric("val_accuracy", value, 0, step),
                Metric("val_loss", 1 - value, 0, step),
                Metric("accuracy", 0.5 + step / 10, 0, step),
            ]
        params = {"activation": activation, "seed": seed, "dataset": "digits"}
        params["train.early_stopping.restore_best"] = restore
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id, status=STATUS["completed"])
    return uri


def compare(capsys, uri: str, out: Path, *args: str) -> tuple[int, str, pd.DataFrame | None]:
    """``main`` in process: exit code, stdout (and stderr), the table by activation."""
    code = main(["--uri", uri, "--out", str(out), "--by", "activation", *args])
    captured = capsys.readouterr()
    table = pd.read_csv(out / "comparison.csv").set_index("activation") if code == 0 else None
    return code, captured.out + captured.err, table


def means(at: str, metric: str) -> dict[str, float]:
    """Each activation's mean of ``metric`` over its seeds, as :data:`RUNS` planted it."""
    found: dict[str, list[float]] = {}
    for activation, _, peak_step, peak, _ in RUNS:
        step = peak_step if at == "best" else EPOCHS - 1
        value = {
            "val_accuracy": val_accuracy(step, peak_step, peak),
            "accuracy": 0.5 + step / 10,
        }[metric]
        found.setdefault(activation, []).append(value)
    return {a: sum(v) / len(v) for a, v in found.items()}


@pytest.mark.parametrize("metric", ["val_accuracy", "accuracy"])
def test_best_takes_each_per_epoch_metric_at_the_runs_best_validation_epoch(
    store, tmp_path, capsys, metric
):
    code, out, last = compare(capsys, store, tmp_path / "last", "--metric", metric)
    assert code == 0, out
    code, out, best = compare(capsys, store, tmp_path / "best", "--metric", metric, "--at", "best")
    assert code == 0, out
    for activation, mean in means("last", metric).items():
        assert last.loc[activation, "mean"] == pytest.approx(mean)
    # The training accuracy climbs to the last epoch: it is taken at validation's best epoch,
    # never at its own.
    for activation, mean in means("best", metric).items():
        assert best.loc[activation, "mean"] == pytest.approx(mean)
    assert f"{metric} at its best epoch by val_accuracy" in out.splitlines()[0]
    assert (
        "Each run at its best epoch by val_accuracy (highest; chosen on validation only, never "
        "on a test metric): epochs 2 to 5, median 3."
    ) in out


def test_best_says_whose_test_metric_is_of_the_restored_best_weights(store, tmp_path, capsys):
    code, out, best = compare(capsys, store, tmp_path, "--at", "best")
    assert code == 0, out
    assert "test_accuracy (best epoch by val_accuracy)" in out.splitlines()[0]
    assert (
        "test_accuracy is measured once, after training: of the restored best weights in 3 of "
        "6 completed runs (train.early_stopping.restore_best), of the last epoch's weights in "
        "the others."
    ) in out
    assert best.loc["relu", "mean"] == pytest.approx(0.51)


def test_best_with_step_is_one_line_and_exit_2_and_nothing_written(store, tmp_path, capsys):
    out = tmp_path / "out"
    code, said, _ = compare(capsys, store, out, "--at", "best", "--step", "0")
    assert code == 2
    assert said == "compare: --at best and --step each pick the epoch to compare at: give one\n"
    assert not out.exists()


def test_an_unknown_at_names_the_choices_and_exits_2(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--uri", store, "--out", str(tmp_path / "out"), "--at", "first"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --at: invalid choice: 'first'" in err and "'last', 'best'" in err
