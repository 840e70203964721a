"""A sweep whose jobs train in its own process records through a tracking process of its
own: the sweep's process never imports MLflow, the runs and the table come out as before,
a Keras model is still logged, a tracking process that dies is named while training goes
on, and a sweep's process killed with SIGKILL leaves no run RUNNING."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from runner.config import UserError
from runner.tracking.remote import RemoteTracker
from tests.conftest import (
    backend_args,
    finished_sweep,
    logged_model_scores,
    plan_job,
    running,
    search,
)

TINY = ["dataset=iris", "model.units=[8]", "train.epochs=2"]


@pytest.mark.backend
def test_a_sweep_records_every_run_without_importing_mlflow(tmp_path, store):
    # -X importtime lists each module this process imports; the tracking process is
    # started without it.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "-m", "activation=relu,tanh"]
        + ["seed=0,1", *TINY, *backend_args()],
        cwd=tmp_path,
        env=dict(os.environ, MLFLOW_TRACKING_URI=store),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert any(" keras" in line for line in imported)
    modules = [line.rsplit("|", 1)[1].strip() for line in imported]
    assert not [module for module in modules if module.split(".")[0] == "mlflow"]
    assert "runner.compare" not in modules  # the table is read and drawn there too
    parent, jobs = finished_sweep(store, 4)
    assert set(jobs["params.activation"]) == {"relu", "tanh"}
    assert jobs["metrics.test_accuracy"].notna().all()
    assert "4 runs" in done.stdout + done.stderr
    assert "comparison" in parent["tags.mlflow.note.content"]


def test_each_job_of_a_sweep_logs_its_model_from_the_sweeps_process(cli, store, make_cfg):
    done = cli("-m", "seed=0,1", *TINY, "tracking.log_model=true")
    assert done.returncode == 0, done.stderr[-3000:]
    _, jobs = finished_sweep(store, 2)
    dataset = plan_job(make_cfg(*TINY)).dataset
    for _, row in jobs.iterrows():
        scores = logged_model_scores(store, row["run_id"], dataset)
        assert scores["test_loss"] == pytest.approx(row["metrics.test_loss"], rel=1e-5)


def test_a_tracking_process_that_dies_is_named_and_what_is_told_is_dropped(store, caplog):
    tracker = RemoteTracker(store)
    try:
        experiment_id = tracker.experiment("remote")
        run = tracker.start_run(experiment_id, "job", {})
        run.log_metrics({"loss": 1.0}, step=0)
        tracker._process.kill()
        tracker._process.wait(timeout=30)
        with pytest.raises(UserError, match="tracking process of .* has ended"):
            tracker.experiment("remote")
        with caplog.at_level(logging.ERROR):
            run.log_metrics({"loss": 0.5}, step=1)
            run.log_metrics({"loss": 0.25}, step=2)
        said = [r.getMessage() for r in caplog.records if "has ended" in r.getMessage()]
        assert len(said) == 1
    finally:
        tracker.close()


def test_a_sweep_killed_with_sigkill_leaves_no_run_running(tmp_path, store):
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", "seed=0,1", "model.units=[32]"]
        + ["train.epochs=5000", "train.steps_per_execution=1", *backend_args()],
        cwd=tmp_path,
        env=dict(os.environ, MLFLOW_TRACKING_URI=store),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:
            if "training 2 models as one" in line:
                break
        time.sleep(1)
        assert running(store) == 3
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    deadline = time.monotonic() + 60
    while running(store) and time.monotonic() < deadline:
        time.sleep(0.5)
    runs = search(store)
    assert set(runs["status"]) == {"KILLED"}
    assert set(runs["tags.outcome"]) == {"interrupted"}
    jobs = runs[runs["tags.role"] == "job"]
    # What the jobs had logged is written with their end: their params.
    assert sorted(jobs["params.seed"]) == ["0", "1"]
