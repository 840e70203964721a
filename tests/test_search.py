"""A hyperparameter search through Optuna's sweeper (hparams_search=optuna), for real: each
trial is a recorded run under the sweep's parent, the sweeper names the best trial's params,
and a trial that diverges ranks last without stopping the search."""

from __future__ import annotations

import math

import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import finished_sweep, search

pytestmark = pytest.mark.slow

SMALL = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "dataset=iris", "train.epochs=2"]


def results(tmp_path) -> dict:
    (path,) = tmp_path.glob("multirun/*/*/optimization_results.yaml")
    return OmegaConf.to_container(OmegaConf.load(path))


def test_a_search_records_each_trial_and_names_the_best_params(cli, store, tmp_path):
    result = cli("-m", *SMALL)
    assert result.returncode == 0, result.stdout + result.stderr
    parent, children = finished_sweep(store, 3)

    found = results(tmp_path)
    best = found["best_params"]
    assert set(best) == {"optimizer.learning_rate", "model.units", "activation"}
    # The best value is the highest last-epoch validation accuracy of the three runs, and
    # the run with the best params is one that reached it.
    assert found["best_value"] == pytest.approx(children["metrics.val_accuracy"].max())
    wanted = (
        best["activation"],
        yaml.safe_load(best["model.units"]),
        best["optimizer.learning_rate"],
    )
    chosen = children[
        [
            (activation, yaml.safe_load(units), float(rate)) == wanted
            for activation, units, rate in zip(
                children["params.activation"],
                children["params.model.units"],
                children["params.optimizer.learning_rate"],
                strict=True,
            )
        ]
    ]
    assert len(chosen) == 1
    assert chosen.iloc[0]["metrics.val_accuracy"] == pytest.approx(found["best_value"])
    artifacts = MlflowClient(store).list_artifacts(parent["run_id"])
    assert "optimization_results.yaml" in {a.path for a in artifacts}


def test_a_diverged_trial_ranks_last_and_the_search_goes_on(cli, store, tmp_path):
    # The command line narrows the search to two learning rates, one of which diverges;
    # the seeded sampler tries both within three trials. A regression loss: Keras's
    # cross-entropy clips probabilities on JAX, so a classifier stays finite however it is
    # blown up. (Its last val_rmse would be NaN: only ranking it worst makes 0.01 the best.)
    result = cli(
        "-m", *SMALL, "dataset=diabetes", "loss=mse", "objective=val_rmse",
        "hydra.sweeper.direction=minimize", "optimizer=sgd",
        "optimizer.learning_rate=1e6,0.01", "activation=relu", "model.units=[8]",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    children = search(store, "tags.role = 'job'")
    assert len(children) == 3
    outcomes = dict(
        zip(children["params.optimizer.learning_rate"], children["tags.outcome"], strict=True)
    )
    assert outcomes == {"1000000.0": "diverged", "0.01": "completed"}
    found = results(tmp_path)
    assert found["best_params"]["optimizer.learning_rate"] == 0.01
    assert math.isfinite(found["best_value"])


def test_an_objective_the_job_does_not_log_is_refused_before_any_trial_trains(cli, store):
    result = cli("-m", *SMALL, "dataset=diabetes", "loss=mse", "model.units=[8]")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    refusal = (
        "objective=val_accuracy is not a metric of a regression job; it logs val_loss, "
        "val_mae, val_rmse."
    )
    assert refusal in output and "Traceback" not in output
    assert "3 of 3 jobs failed" in output
    trials = search(store, "tags.role = 'job'")
    assert list(trials["status"]) == ["FAILED"] * 3
    assert all(error.startswith(f"UserError: {refusal}") for error in trials["tags.error"])
    # Refused before training: no trial logged a single epoch.
    assert not any(column.startswith("metrics.") for column in trials.dropna(axis=1).columns)
    (parent,) = search(store, "tags.role = 'sweep'")["status"]
    assert parent == "FAILED"
