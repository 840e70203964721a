"""``python -m runner`` as a user runs it: real subprocesses, real Hydra multirun, a real
SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.conftest import finished_sweep, running, search

TINY = ["model.units=[16]", "train.epochs=1"]


@pytest.mark.backend
def test_a_single_run_prints_its_metrics_and_run_id_and_is_reproducible(cli, store):
    first = cli("activation=relu", "loss=mse", *TINY)
    assert first.returncode == 0, first.stderr
    runs = search(store)
    assert len(runs) == 1
    run_id = runs.iloc[0]["run_id"]
    assert run_id in first.stdout + first.stderr
    assert "test_accuracy=" in first.stdout + first.stderr
    experiment = runs.iloc[0]["experiment_id"]
    link = f"/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
    assert f"http://127.0.0.1:5000{link}" in first.stdout + first.stderr
    second = cli("activation=relu", "loss=mse", *TINY)
    assert second.returncode == 0, second.stderr
    runs = search(store)
    assert runs["status"].tolist() == ["FINISHED", "FINISHED"]
    assert runs["metrics.test_accuracy"].nunique() == 1
    assert runs["metrics.test_loss"].nunique() == 1


def test_a_sweep_records_its_jobs_under_one_parent_and_prints_the_table(cli, store):
    result = cli("-m", "activation=sigmoid,relu", "loss=mse,categorical_crossentropy", *TINY)
    assert result.returncode == 0, result.stderr
    _, children = finished_sweep(store, 4)
    assert len(set(zip(children["params.activation"], children["params.loss"], strict=True))) == 4
    assert children["tags.sweep_id"].nunique() == 1
    output = result.stdout + result.stderr
    assert "test_accuracy mean ± std" in output
    for activation in ("sigmoid", "relu"):
        assert activation in output
    # Each job's lines say which of the sweep's jobs it is.
    for number in range(1, 5):
        assert f"job {number}/4 " in output
    # The parent's page in the UI shows the table, and the sweep prints its address.
    parent = search(store, "tags.role = 'sweep'").iloc[0]
    note = parent["tags.mlflow.note.content"]
    assert "test_accuracy mean ± std" in note and "sigmoid" in note
    link = (
        f"http://127.0.0.1:5000/#/experiments/{parent['experiment_id']}/runs/"
        f"{parent['run_id']}?workflowType=machine_learning"
    )
    assert link in output


@pytest.mark.parametrize(
    "dataset,loss,metric",
    [("diabetes", "mse", "test_rmse"), ("iris", "categorical_crossentropy", "test_accuracy")],
)
def test_the_default_loss_fits_the_task_and_the_run_records_the_one_it_chose(
    cli, store, dataset, loss, metric
):
    result = cli(f"dataset={dataset}", *TINY)
    assert result.returncode == 0, result.stderr
    run = search(store).iloc[0]
    assert (run["params.loss"], run["params.loss.name"]) == (loss, loss)
    assert run["tags.mlflow.runName"] == f"relu-{loss}-{dataset}-s0"
    assert run[f"metrics.{metric}"] >= 0


def test_a_sweep_over_datasets_has_one_parent_per_dataset_and_none_left_empty(cli, store):
    # Each dataset's runs go in its own experiment; the master config's (digits), where no
    # job ran, keeps no empty parent.
    result = cli("-m", "dataset=iris,wine", "seed=0,1", *TINY)
    assert result.returncode == 0, result.stderr
    parents = search(store, "tags.role = 'sweep'")
    children = search(store, "tags.role = 'job'")
    assert len(parents) == 2 and set(parents["status"]) == {"FINISHED"}
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    client = MlflowClient(store)
    names = {client.get_experiment(e).name: e for e in parents["experiment_id"]}
    assert set(names) == {"iris", "wine"}
    for name, experiment in names.items():
        parent = parents.set_index("experiment_id").loc[experiment, "run_id"]
        mine = children[children["params.dataset"] == name]
        assert set(mine["tags.mlflow.parentRunId"]) == {parent}
        assert set(mine["experiment_id"]) == {experiment}
    # The empty parent is deleted once ended: not left RUNNING in the store.
    (empty,) = [
        run
        for run in client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.role = 'sweep'",
            run_view_type=ViewType.DELETED_ONLY,
        )
    ]
    assert (empty.info.status, empty.info.end_time is not None) == ("FINISHED", True)


@pytest.mark.slow
def test_a_parallel_joblib_sweep_records_every_job_with_its_history(cli, store):
    result = cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "activation=relu,tanh", "loss=mse,categorical_crossentropy", "model.units=[8]",
        "train.epochs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, children = finished_sweep(store, 4)
    # Two workers on this machine's cores: each gets its share, not all of them.
    assert set(children["params.train.threads"]) == {str(max(1, (os.cpu_count() or 1) // 2))}
    client = MlflowClient(store)
    for run_id in children["run_id"]:
        for name in ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0"):
            assert len(client.get_metric_history(run_id, name)) == 2, name


def test_a_diverging_job_fails_alone_and_the_sweep_goes_on(cli, store):
    # A regression loss: Keras's cross-entropy clips probabilities on JAX, so a classifier
    # blown up by a huge rate stays finite there (and collapses to chance) instead.
    result = cli(
        "-m", "dataset=diabetes", "loss=mse", "optimizer=sgd", "optimizer.learning_rate=1e6,0.01",
        *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    children = search(store, "tags.role = 'job'").set_index("params.optimizer.learning_rate")
    assert children.loc["1000000.0", ["status", "tags.outcome"]].tolist() == ["FAILED", "diverged"]
    assert children.loc["0.01", ["status", "tags.outcome"]].tolist() == ["FINISHED", "completed"]
    assert "diverged" in result.stdout + result.stderr
    assert running(store) == 0


def test_a_refused_job_is_recorded_failed_and_the_sweep_exits_non_zero(cli, store):
    result = cli("-m", "activation=relu,foo", *TINY)
    assert result.returncode == 1
    children = search(store, "tags.role = 'job'").set_index("params.activation")
    assert children.loc["relu", "tags.outcome"] == "completed"
    assert children.loc["foo", "tags.outcome"] == "failed"
    assert "not a Keras activation" in children.loc["foo", "tags.error"]
    parent = search(store, "tags.role = 'sweep'").iloc[0]
    assert (parent["status"], parent["tags.outcome"]) == ("FAILED", "failed")
    assert "1 of 2 jobs failed" in result.stdout + result.stderr
    assert running(store) == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["activation=foo"], "activation=foo is not a Keras activation. Allowed: "),
        (["activation=[relu,tanh]", "model.units=[8]"], "names 2 activations but model.units=[8]"),
        (["train.epochs=0"], "train.epochs=0 is not allowed"),
        (["train.batch_size=0"], "train.batch_size=0 is not allowed"),
        (["loss=foo"], "Could not find 'loss/foo'"),
        (["dataset=foo"], "Could not find 'dataset/foo'"),
        (["optimizer=foo"], "Could not find 'optimizer/foo'"),
        (["train.epochs=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
        (["dataset=diabetes", "loss=categorical_crossentropy"], "needs a classification dataset"),
        (["device=gpu"], "sees no GPU on this machine"),
    ],
)
def test_user_errors_exit_non_zero_with_a_message_and_no_run(cli, store, args, message):
    result = cli(*args)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
    if message.startswith("activation=foo"):
        assert all(name in output for name in ("relu", "sigmoid", "tanh"))
    assert running(store) == 0


def test_the_actlab_command_completes_config_groups_in_the_shell(tmp_path):
    # Hydra's bash completion asks the command itself for the words that fit.
    actlab = Path(sys.executable).with_name("actlab")
    assert actlab.exists(), "the actlab command is installed with the package"
    line = "actlab loss="
    env = dict(os.environ, COMP_LINE=line, COMP_POINT=str(len(line)))
    query = subprocess.run(
        [str(actlab), "-sc", "query=bash"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert query.returncode == 0, query.stderr
    assert {"loss=auto", "loss=mse", "loss=categorical_crossentropy"} <= set(query.stdout.split())
