"""Tracking against real SQLite stores: metrics written by the run's writer thread are all
in the store before its status; an artifact the store cannot write ends the run FAILED
with its metrics kept; a dataset two parallel jobs insert at once is recorded for both;
``tracking.enabled=false`` trains without creating a store."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runner.track import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STATUS, Tracker, Unrecorded

# Logged in a tight loop, far faster than the store writes them: most are still queued
# when the run ends.
EPOCHS = 500
KEYS = ("loss", "val_loss", "grad_norm/hidden_0")


@pytest.mark.parametrize("ending", [COMPLETED, DIVERGED, FAILED, INTERRUPTED])
def test_queued_metrics_are_all_written_before_the_status(store, tmp_path, ending):
    tracker = Tracker(store)
    experiment = tracker.experiment("queued")
    errors = {FAILED: ValueError("boom"), INTERRUPTED: KeyboardInterrupt()}
    with (
        suppress(ValueError, KeyboardInterrupt),
        tracker.open_run(experiment, "job", {}, output_dir=tmp_path) as run,
    ):
        for epoch in range(EPOCHS):
            run.log_metrics({key: 1 / (epoch + 1) for key in KEYS}, step=epoch)
        if ending == DIVERGED:
            run.outcome = DIVERGED
        if ending in errors:
            raise errors[ending]
    # Read at once: a run that shows as ended has all its metrics.
    client = MlflowClient(store)
    ended = client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags["outcome"]) == (STATUS[ending], ending)
    for key in KEYS:
        steps = sorted(m.step for m in client.get_metric_history(run.run_id, key))
        assert steps == list(range(EPOCHS)), key
    assert not (tmp_path / "unrecorded.json").exists()


def test_an_artifact_that_cannot_be_written_fails_the_run_and_keeps_its_metrics(store, tmp_path):
    # The experiment's artifact directory is a file, so no artifact can be created in it
    # (whoever runs the test, root included).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    tracker = Tracker(store)
    experiment = tracker.client.create_experiment("blocked", artifact_location=blocker.as_uri())
    with (
        pytest.raises(Unrecorded) as raised,
        tracker.open_run(experiment, "job", {}, output_dir=tmp_path) as run,
    ):
        for epoch in range(3):
            run.log_metrics({"loss": 1 / (epoch + 1)}, step=epoch)
        run.log_text("units: [8]\n", "config.yaml")
        run.log_metrics({"test_accuracy": 0.9})

    kept_in = tmp_path / "unrecorded.json"
    assert "the artifact config.yaml could not be recorded" in str(raised.value)
    assert str(kept_in) in str(raised.value)
    client = MlflowClient(store)
    ended = client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags["outcome"]) == ("FAILED", "failed")
    assert ended.data.tags["unrecorded"] == "config.yaml"
    assert ended.data.tags["error"].startswith("could not write config.yaml: NotADirectoryError")
    assert len(client.get_metric_history(run.run_id, "loss")) == 3
    assert ended.data.metrics["test_accuracy"] == 0.9
    kept = json.loads(kept_in.read_text())
    assert (kept["artifacts"], kept["metrics"], kept["status"]) == (["config.yaml"], [], None)


def test_a_run_that_cannot_be_recorded_leaves_the_runs_around_it_their_outcome(store, tmp_path):
    # One process, several runs open at once (as the fused launcher has them): the inner
    # run's Unrecorded passes through the outer run, which still ends as its job did.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    tracker = Tracker(store)
    fine = tracker.experiment("fine")
    blocked = tracker.client.create_experiment("blocked", artifact_location=blocker.as_uri())
    with pytest.raises(Unrecorded), ExitStack() as runs:
        outer = runs.enter_context(tracker.open_run(fine, "outer", {}, output_dir=tmp_path))
        inner = runs.enter_context(tracker.open_run(blocked, "inner", {}, output_dir=tmp_path))
        inner.log_text("units: [8]\n", "config.yaml")
        outer.log_metrics({"loss": 0.5})
    client = MlflowClient(store)
    assert client.get_run(outer.run_id).info.status == "FINISHED"
    assert client.get_run(outer.run_id).data.metrics == {"loss": 0.5}
    assert client.get_run(inner.run_id).info.status == "FAILED"


def test_tracking_disabled_trains_and_records_nothing(cli, store, tmp_path):
    single = cli("tracking.enabled=false", "model.units=[4]", "train.epochs=2")
    assert single.returncode == 0, single.stderr
    assert "epoch 2/2" in single.stdout and "test_accuracy=" in single.stdout
    assert "tracking.enabled=false: nothing is recorded" in single.stdout

    sweep = cli("-m", "tracking.enabled=false", "seed=0,1", "model.units=[4]", "train.epochs=2")
    assert sweep.returncode == 0, sweep.stderr
    assert sweep.stdout.count("epoch 2/2") == 2
    assert sweep.stdout.count("tracking.enabled=false: nothing is recorded") == 1
    assert "browse the sweep's runs" not in sweep.stdout

    assert not Path(store.removeprefix("sqlite:///")).exists()
    assert not (tmp_path / "mlartifacts").exists()


def test_a_dataset_inserted_by_a_parallel_job_at_the_same_moment_is_shared(store, tmp_path):
    # The race a parallel sweep on a fresh store runs into: MLflow finds the dataset missing,
    # another job inserts it, then this job inserts it too. The other job is slipped in for
    # real, through a second connection, just before this job's insert.
    from sqlalchemy import event

    tracker = Tracker(store)
    experiment = tracker.experiment("parallel")
    splits = {"train": (np.eye(4), np.arange(4)), "test": (np.ones((2, 4)), np.arange(2))}
    engine = tracker.client._tracking_client.store.engine
    with tracker.open_run(experiment, "other", {}, output_dir=tmp_path) as other:
        raced = []

        def other_job_first(conn, cursor, statement, *args):
            if statement.startswith("INSERT INTO datasets") and not raced:
                raced.append(statement)
                other.log_inputs("digits", {}, splits)

        event.listen(engine, "before_cursor_execute", other_job_first)
        try:
            with tracker.open_run(experiment, "job", {}, output_dir=tmp_path) as run:
                run.log_inputs("digits", {}, splits)
        finally:
            event.remove(engine, "before_cursor_execute", other_job_first)

    assert raced
    client = MlflowClient(store)
    for ran in (run, other):
        recorded = client.get_run(ran.run_id)
        assert recorded.info.status == "FINISHED"
        assert sorted(i.dataset.name for i in recorded.inputs.dataset_inputs) == [
            "digits-test",
            "digits-train",
        ]
    assert not (tmp_path / "unrecorded.json").exists()


def test_parents_two_parallel_jobs_create_at_once_become_one(store):
    # Two parallel jobs of an experiment without a parent yet both find none and both
    # create one: the other job's is slipped in for real, just before this job's create.
    tracker = Tracker(store)
    experiment = tracker.experiment("parallel")
    create = tracker.client.create_run
    others = []

    def other_job_first(*args, **kwargs):
        if not others:
            others.append(create(*args, **kwargs).info.run_id)
            # Start times are in milliseconds: two parents of the same one may both stay.
            time.sleep(0.002)
        return create(*args, **kwargs)

    tracker.client.create_run = other_job_first
    parent = tracker.sweep_parent(experiment, "/sweeps/s", "s")
    assert parent == others[0]
    assert tracker.sweep_parent(experiment, "/sweeps/s", "s") == parent
    client = MlflowClient(store)
    active = client.search_runs([experiment], filter_string="tags.role = 'sweep'")
    assert [run.info.run_id for run in active] == [parent]
