"""Real training runs, in process, recorded in a real SQLite MLflow store."""

from __future__ import annotations

import dataclasses
import math

import pytest
from mlflow.tracking import MlflowClient

from runner import engine
from runner.config import Encoding, not_training
from runner.engine import OptimizerKind
from runner.jobs import execute, outcome
from runner.jobs.plan import plan
from runner.jobs.spec import JobContext
from runner.model import OutputHead
from runner.sweep import Sweep
from tests.conftest import plan_job, search

pytestmark = pytest.mark.backend

TINY = ["model.units=[16,8]", "train.epochs=2"]


def run(cfg, overrides=(), sweep=None):
    return execute.execute([plan(cfg, JobContext(sweep=sweep, overrides=tuple(overrides)))])[0]


def test_a_run_records_params_epoch_metrics_test_metrics_and_artifacts(make_cfg, store):
    cfg = make_cfg("activation=[relu,tanh]", "loss=mse", *TINY)
    test = run(cfg, overrides=["activation=[relu,tanh]", "loss=mse"])
    runs = search(store)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["tags.outcome"] == "completed"
    assert row["tags.mlflow.runName"] == "relu+tanh-mse-digits-s0"
    assert (
        row["experiment_id"] == MlflowClient(store).get_experiment_by_name("digits").experiment_id
    )
    params = {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.")}
    assert params["activation"] == "relu,tanh"
    assert params["loss"] == "mse"
    assert params["dataset"] == "digits"
    assert params["optimizer"] == "adam"
    assert params["seed"] == "0"
    assert params["model.units"] == "[16, 8]"
    assert params["train.epochs"] == "2"
    assert params["optimizer.learning_rate"] == "0.001"
    assert row["metrics.test_accuracy"] == pytest.approx(test["test_accuracy"])
    # The last epoch's validation metric too, as the store has it: what a search optimises.
    assert row["metrics.val_accuracy"] == pytest.approx(test["val_accuracy"])
    assert 0.2 < row["metrics.test_accuracy"] <= 1  # twice chance after 2 epochs
    assert row["metrics.train_seconds"] > 0

    client = MlflowClient(store)
    run_id = row["run_id"]
    for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == [0, 1], name
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert losses[1] < losses[0]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "overrides.yaml", "model_summary.txt"} <= artifacts
    summary = client.download_artifacts(run_id, "model_summary.txt")
    text = open(summary).read()
    assert "hidden_0_relu" in text and "hidden_1_tanh" in text and "output_softmax" in text


def test_regression_logs_mae_and_rmse(make_cfg, store):
    metrics = run(make_cfg("dataset=diabetes", "loss=huber", *TINY))
    names = {"loss", "mae", "rmse"}
    assert set(metrics) == {f"{split}_{name}" for split in ("val", "test") for name in names}
    row = search(store).iloc[0]
    assert (
        row["experiment_id"] == MlflowClient(store).get_experiment_by_name("diabetes").experiment_id
    )
    assert {"metrics.mae", "metrics.val_mae", "metrics.rmse"} <= set(row.index)
    assert 0 < row["metrics.test_rmse"] < 2


def test_the_same_seed_gives_identical_test_metrics(make_cfg):
    first = run(make_cfg("seed=3", *TINY))
    second = run(make_cfg("seed=3", *TINY))
    other = run(make_cfg("seed=4", *TINY))
    assert first == second
    assert first != other


# Stops at the second epoch: no later val_loss improves on the first by 10.
STOPS = [
    "train.early_stopping.enabled=true",
    "train.early_stopping.patience=0",
    "train.early_stopping.min_delta=10",
]


def test_early_stopping_ends_a_run_finished_with_the_test_metrics_of_its_best_weights(
    make_cfg, store
):
    iris = ["dataset=iris", "model.units=[8]"]
    stopped = run(
        make_cfg(*iris, "train.epochs=5", *STOPS, "train.early_stopping.restore_best=true")
    )
    one_epoch = run(make_cfg(*iris, "train.epochs=1"))

    runs = search(store).set_index("params.train.epochs")
    row = runs.loc["5"]
    assert [row["status"], row["tags.outcome"]] == ["FINISHED", "completed"]
    assert [row["metrics.stopped_epoch"], row["metrics.best_epoch"]] == [2, 1]
    assert row["params.train.early_stopping.restore_best"] == "True"
    assert len(MlflowClient(store).get_metric_history(row["run_id"], "loss")) == 2
    # Restored to its first epoch's weights: the test metrics of the same job trained one.
    assert stopped["test_loss"] == pytest.approx(one_epoch["test_loss"], rel=1e-5)
    assert stopped["test_accuracy"] == pytest.approx(one_epoch["test_accuracy"], abs=1e-6)
    assert "metrics.stopped_epoch" not in runs or math.isnan(runs.loc["1", "metrics.stopped_epoch"])


def test_a_warmup_cosine_schedule_logs_the_rate_of_each_epoch_and_its_resolved_length(
    make_cfg, store
):
    cfg = make_cfg(
        "dataset=iris",
        "model.units=[8]",
        "train.epochs=5",
        "optimizer.schedule=warmup_cosine",
        "optimizer.warmup_epochs=1",
    )
    run(cfg)

    row = search(store).iloc[0]
    assert row["params.optimizer.schedule"] == "warmup_cosine"
    assert row["params.optimizer.decay_epochs.resolved"] == "4"
    history = MlflowClient(store).get_metric_history(row["run_id"], "learning_rate")
    rates = [metric.value for metric in sorted(history, key=lambda m: m.step)]
    # Warmed up to 0.001 by the first epoch's end, then down a cosine over 4 epochs to 0.
    expected = [0.001 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert rates == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_model_l2_adds_its_penalty_to_the_training_loss_with_adamw_and_clipping(make_cfg, store):
    iris = ["dataset=iris", "model.units=[8]", "train.epochs=2", "optimizer=adamw"]
    plain = run(make_cfg(*iris, "optimizer.clipnorm=1.0"))
    penalized = run(make_cfg(*iris, "optimizer.clipnorm=1.0", "model.l2=10"))

    runs = search(store).set_index("params.model.l2")
    assert set(runs["status"]) == {"FINISHED"}
    assert runs.loc["10.0", "params.optimizer.weight_decay"] == "0.004"
    assert runs.loc["10.0", "params.optimizer.clipnorm"] == "1.0"
    # 10 times the kernels' squared sum dwarfs the cross-entropy; the test loss has none.
    assert runs.loc["10.0", "metrics.loss"] > runs.loc["0.0", "metrics.loss"] + 1
    assert penalized["test_loss"] < 5 and plain["test_loss"] < 5


def test_a_nan_loss_ends_the_run_failed_and_diverged_without_a_model(make_cfg, store, caplog):
    # Regression: a classifier's clipped cross-entropy stays finite on JAX (test_cli.py).
    overrides = ("dataset=diabetes", "loss=mse", "optimizer=sgd", "optimizer.learning_rate=1e6")
    test = run(make_cfg(*overrides, "tracking.log_model=true", *TINY))
    assert test == {}
    row = search(store).iloc[0]
    assert row["status"] == "FAILED"
    assert row["tags.outcome"] == "diverged"
    # The epoch as the message counts it, from 1: its loss is the NaN at step 0.
    assert row["tags.diverged_at_epoch"] == "1"
    assert "stopped being finite at epoch 1;" in caplog.text
    assert math.isnan(row["metrics.loss"])
    assert "metrics.test_rmse" not in row or math.isnan(row["metrics.test_rmse"])
    assert not MlflowClient(store).search_logged_models([row["experiment_id"]])


def test_an_error_inside_a_run_ends_it_failed_with_the_error(make_cfg, store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine, "train", broken)
    with pytest.raises(RuntimeError):
        run(make_cfg("tracking.log_model=true", *TINY))
    row = search(store).iloc[0]
    assert (row["status"], row["tags.outcome"]) == ("FAILED", "failed")
    assert row["tags.error"] == "RuntimeError: out of memory"
    assert not MlflowClient(store).search_logged_models([row["experiment_id"]])


def test_resume_skips_a_finished_job_unless_it_lacks_the_model_now_asked_for(make_cfg, store):
    def resumed(*overrides):
        return outcome.run_plans([plan_job(make_cfg("resume=true", *overrides, *TINY))])[0]

    first = run(make_cfg(*TINY))
    assert resumed() == first
    assert len(search(store)) == 1
    # The fingerprint leaves tracking.* out: the finished run matches, but has no model.
    resumed("tracking.log_model=true")
    runs = search(store)
    assert len(runs) == 2
    (model,) = MlflowClient(store).search_logged_models([runs.iloc[0]["experiment_id"]])
    assert resumed("tracking.log_model=true") == first
    assert len(search(store)) == 2


@pytest.mark.parametrize(
    "at",
    [(execute, "fresh_keras"), (execute.JobRecord, "start")],
    ids=["before-the-run", "after-the-run"],
)
def test_a_signal_in_a_single_run_says_whether_its_run_was_created(
    make_cfg, store, monkeypatch, caplog, at
):
    def signal(*args):
        raise KeyboardInterrupt

    planned = plan_job(make_cfg(*TINY))
    # Before the run exists (dropping the last job's Keras state), or just after.
    monkeypatch.setattr(*at, signal)
    with pytest.raises(SystemExit) as exited:
        outcome.run_plans([planned])
    assert exited.value.code == 130
    runs = search(store)
    if at[1] == "fresh_keras":
        assert runs.empty
        assert "interrupted before the run was created: nothing was recorded" in caplog.text
    else:
        assert runs.iloc[0][["status", "tags.outcome"]].tolist() == ["KILLED", "interrupted"]
        assert "interrupted: the run ended KILLED" in caplog.text


def test_jobs_of_a_sweep_share_one_parent_run(make_cfg, store):
    sweep = Sweep(id="/tmp/sweeps/a", name="sweeps/a")
    run(make_cfg("activation=relu", *TINY), sweep=sweep)
    run(make_cfg("activation=tanh", *TINY), sweep=sweep)
    runs = search(store)
    parents = runs[runs["tags.role"] == "sweep"]
    children = runs[runs["tags.role"] == "job"]
    assert len(parents) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    assert set(children["tags.sweep_id"]) == {"/tmp/sweeps/a"}


OFFLINE = [
    "iris",
    "wine",
    "breast_cancer",
    "diabetes",
    "circles",
    "moons",
    "xor",
    "friedman",
    "mnist5k",
]


@pytest.mark.parametrize("name", OFFLINE)
def test_every_offline_dataset_trains_one_epoch(make_cfg, store, name):
    loss = "mse" if name in ("diabetes", "friedman") else "categorical_crossentropy"
    test = run(make_cfg(f"dataset={name}", f"loss={loss}", "model.units=[8]", "train.epochs=1"))
    assert all(math.isfinite(v) for v in test.values())
    row = search(store).iloc[0]
    assert (row["status"], row["tags.mlflow.runName"]) == ("FINISHED", f"relu-{loss}-{name}-s0")


def test_each_split_is_logged_as_an_mlflow_dataset_input(make_cfg, store):
    run(make_cfg(*TINY))
    run(make_cfg("activation=tanh", *TINY))
    client = MlflowClient(store)
    runs = search(store)
    seen = []
    for run_id in runs["run_id"]:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        contexts = {i.tags[0].value: i.dataset for i in inputs}
        assert set(contexts) == {"train", "validation", "test"}
        assert contexts["train"].name == "digits-train"
        assert "load_digits" in contexts["train"].source
        seen.append({c: d.digest for c, d in contexts.items()})
    assert seen[0] == seen[1]  # two runs, the same data
    assert len(set(seen[0].values())) == 3


def test_linear_layers_cannot_separate_circles_and_relu_can(make_cfg):
    """The tutorial's first claim: without a non-linear activation, a stack of layers is one
    linear map, and no linear map separates two concentric rings."""
    common = [
        "dataset=circles",
        "model.units=[16,16,16]",
        "train.epochs=30",
        "optimizer.learning_rate=0.01",
    ]
    linear = run(make_cfg("activation=linear", *common))
    relu = run(make_cfg("activation=relu", *common))
    assert linear["test_accuracy"] < 0.65
    assert relu["test_accuracy"] > 0.9


def test_a_jobs_spec_is_its_config_resolved_once_and_frozen(make_cfg):
    spec = plan_job(
        make_cfg("activation=[relu,tanh]", "model.units=[16,8]", "tracking.enabled=false")
    ).spec
    assert spec.name == "relu+tanh-categorical_crossentropy-digits-s0"
    assert spec.model.activations == ("relu", "tanh")
    assert spec.model.head == OutputHead(10, "softmax", Encoding.onehot)
    assert (spec.loss, spec.learning_rate, spec.optimizer) == (
        "categorical_crossentropy",
        0.001,
        OptimizerKind("adam"),
    )
    # loss=auto is recorded as the loss it resolved to, as if the user had named it.
    assert spec.params["loss"] == spec.params["loss.name"] == "categorical_crossentropy"
    assert spec.params["activation"] == "relu,tanh"
    assert "name: categorical_crossentropy" in spec.config_yaml
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1


def test_only_what_changes_training_changes_a_jobs_fingerprint(make_cfg):
    assert not_training() == ("train.threads", "resume", "objective", "tracking")

    def fingerprint(*overrides):
        return plan_job(make_cfg("tracking.enabled=false", *overrides)).spec.fingerprint

    same = fingerprint()
    for overrides in (["resume=true"], ["objective=val_loss"], ["tracking.figure=true"]):
        assert fingerprint(*overrides) == same, overrides
    for overrides in (["seed=1"], ["optimizer.learning_rate=0.01"], ["activation=tanh"]):
        assert fingerprint(*overrides) != same, overrides


def test_a_long_runs_result_keeps_its_curve_in_bounded_memory():
    result = engine.TrainResult()
    for epoch in range(10 * engine.KEPT_EPOCHS + 3):
        result.add(epoch, {"loss": 1 / (epoch + 1), "val_loss": 2 / (epoch + 1)})
    assert len(result.epochs) <= engine.KEPT_EPOCHS
    assert result.epochs[:3] == [0, result.stride, 2 * result.stride] and result.stride == 16
    assert result.history["loss"][1] == 1 / (result.stride + 1)
    assert result.last == {"loss": 1 / 10003, "val_loss": 2 / 10003}
    short = engine.TrainResult()
    for epoch in range(5):
        short.add(epoch, {"loss": float(epoch)})
    assert (short.epochs, short.history["loss"]) == ([0, 1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0, 4.0])
