"""Tracking against real SQLite stores: metrics written by the run's writer thread are all
in the store before its status; an artifact the store cannot write ends the run FAILED
with its metrics kept; a dataset two parallel jobs insert at once is recorded for both;
``tracking.enabled=false`` trains without creating a store; a store the runner or
``runner.compare`` cannot use (a directory, an unreachable server) is one message, exit 2,
within seconds."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, suppress
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from runner.compat import installed
from runner.compat import mlflow as compat_mlflow
from runner.config import UserError
from runner.jobs.execute import execute
from runner.tracking import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    STATUS,
    Tracker,
    Unrecorded,
    quoted,
)
from runner.tracking.store import connect
from tests.conftest import (
    backend_args,
    finished_sweep,
    free_port,
    logged_model_scores,
    plan_job,
    search,
)

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


def blocked_experiment(store: str, tmp_path: Path) -> str:
    """An experiment whose artifact directory is a file, so no artifact can be created in
    it (whoever runs the test, root included)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return MlflowClient(store).create_experiment("blocked", artifact_location=blocker.as_uri())


def test_an_artifact_that_cannot_be_written_fails_the_run_and_keeps_its_metrics(store, tmp_path):
    tracker = Tracker(store)
    experiment = blocked_experiment(store, tmp_path)
    with (
        pytest.raises(Unrecorded) as raised,
        tracker.open_run(experiment, "job", {}, output_dir=tmp_path) as run,
    ):
        for epoch in range(3):
            run.log_metrics({"loss": 1 / (epoch + 1)}, step=epoch)
        run.log_texts({"config.yaml": "units: [8]\n"})
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


def test_a_model_that_cannot_be_written_fails_the_run_and_its_logged_model(store, tmp_path):
    tracker = Tracker(store)
    experiment = blocked_experiment(store, tmp_path)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with (
        pytest.raises(Unrecorded),
        tracker.open_run(experiment, "job", {}, output_dir=tmp_path) as run,
    ):
        run.log_model(net, step=0)

    client = MlflowClient(store)
    ended = client.get_run(run.run_id)
    assert (ended.info.status, ended.data.tags["unrecorded"]) == ("FAILED", "model")
    (model,) = client.search_logged_models([experiment])
    assert model.status.name == "FAILED"


def test_a_run_that_cannot_be_recorded_leaves_the_runs_around_it_their_outcome(store, tmp_path):
    # One process, several runs open at once (as the fused launcher has them): the inner
    # run's Unrecorded passes through the outer run, which still ends as its job did.
    tracker = Tracker(store)
    fine = tracker.experiment("fine")
    blocked = blocked_experiment(store, tmp_path)
    with pytest.raises(Unrecorded), ExitStack() as runs:
        outer = runs.enter_context(tracker.open_run(fine, "outer", {}, output_dir=tmp_path))
        inner = runs.enter_context(tracker.open_run(blocked, "inner", {}, output_dir=tmp_path))
        inner.log_texts({"config.yaml": "units: [8]\n"})
        outer.log_metrics({"loss": 0.5})
    client = MlflowClient(store)
    assert client.get_run(outer.run_id).info.status == "FINISHED"
    assert client.get_run(outer.run_id).data.metrics == {"loss": 0.5}
    assert client.get_run(inner.run_id).info.status == "FAILED"


@pytest.mark.backend
def test_a_logged_model_scores_the_test_split_as_its_run_recorded(make_cfg, store):
    cfg = make_cfg("dataset=iris", "model.units=[8]", "train.epochs=3", "tracking.log_model=true")
    plan = plan_job(cfg)
    execute([plan])
    row = search(store).iloc[0]
    scores = logged_model_scores(store, row["run_id"], plan.dataset)
    # The loss, unlike the accuracy, tells the trained weights from any others.
    assert scores["test_loss"] == pytest.approx(row["metrics.test_loss"], rel=1e-5)
    assert scores["test_accuracy"] == pytest.approx(row["metrics.test_accuracy"], abs=1e-5)
    (model,) = MlflowClient(store).search_logged_models([row["experiment_id"]])
    assert (model.name, model.source_run_id, model.status.name) == ("model", row["run_id"], "READY")


def test_tracking_disabled_trains_and_records_nothing(cli, store, tmp_path):
    single = cli("tracking.enabled=false", "model.units=[4]", "train.epochs=2")
    assert single.returncode == 0, single.stderr
    assert "epoch 2/2" in single.stdout and "test_accuracy=" in single.stdout
    assert "tracking.enabled=false: nothing is recorded" in single.stdout

    sweep = cli("-m", "tracking.enabled=false", "seed=0,1", "model.units=[4]", "train.epochs=2")
    assert sweep.returncode == 0, sweep.stderr
    assert "epoch 2/2  2 of 2 models training" in sweep.stdout  # fused, as one group
    assert sweep.stdout.count("test_accuracy=") == 2
    assert sweep.stdout.count("tracking.enabled=false: nothing is recorded") == 1
    assert "the sweep in the MLflow UI" not in sweep.stdout + sweep.stderr

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
    parent = tracker.sweep_parent("parallel", "/sweeps/s", "s")
    assert parent == others[0]
    assert tracker.sweep_parent("parallel", "/sweeps/s", "s") == parent
    client = MlflowClient(store)
    active = client.search_runs([experiment], filter_string="tags.role = 'sweep'")
    assert [run.info.run_id for run in active] == [parent]


SWEEP_DIRS = ["it's a\\b dïr ωμέγα", 'say "hi"']


def test_quoted_values_find_exactly_their_runs_in_a_real_store(store):
    client = MlflowClient(store)
    experiment = client.create_experiment("quotes")
    values = [*SWEEP_DIRS, "a\\'b", "plain"]
    ids = {
        value: client.create_run(experiment, tags={"sweep_id": value}).info.run_id
        for value in values
    }
    for value, run_id in ids.items():
        # A quote after the value: a literal that ended early or late would take it in.
        found = client.search_runs(
            [experiment],
            filter_string=f"tags.sweep_id = {quoted(value)} and attributes.status = 'RUNNING'",
        )
        assert [run.info.run_id for run in found] == [run_id], value
    for value in ["both ' and \"", "ends in \\"]:
        with pytest.raises(UserError, match="cannot be searched for in an MLflow store"):
            quoted(value)


@pytest.mark.parametrize("name", SWEEP_DIRS)
def test_a_sweep_into_a_directory_with_quotes_records_its_jobs(cli, store, tmp_path, name):
    # Hydra's override grammar quotes the value with the quote that it does not hold.
    quote = "'" if '"' in name else '"'
    result = cli(
        "-m", f"hydra.sweep.dir={quote}multirun/{name}{quote}", "dataset=iris",
        "model.units=[8]", "train.epochs=1", "seed=0,1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    _, children = finished_sweep(store, 2)
    assert set(children["tags.sweep_id"]) == {str(tmp_path / "multirun" / name)}


def test_a_relative_store_path_is_the_launch_directorys_for_every_job_and_compare(cli, tmp_path):
    # Each job changes into its own output directory: the store stays where the sweep began.
    result = cli(
        "-m", "tracking.uri=sqlite:///relative.db", "hydra.job.chdir=true",
        "dataset=iris", "model.units=[8]", "train.epochs=1", "seed=0,1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    store = f"sqlite:///{tmp_path / 'relative.db'}"
    finished_sweep(store, 2)
    read = subprocess.run(
        [sys.executable, "-m", "runner.compare", "--uri", "sqlite:///relative.db", "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert table[["activation", "n"]].values.tolist() == [["relu", 2]]


def can_mount_tmpfs() -> bool:
    """Whether this user may mount a tmpfs in a user namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["chmod", "mount"])
def test_a_new_store_in_a_read_only_directory_is_refused_before_mlflow_retries(tmp_path, cli, how):
    directory = tmp_path / "read-only"
    directory.mkdir()
    uri = f"sqlite:///{directory / 'stores' / 'new.db'}"
    args = [f"tracking.uri={uri}", "model.units=[8]", "train.epochs=1"]
    # MLflow retries creating the file for about 100 s: the limit fails a test that waits.
    limit = 90
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes to a 0555 directory all the same")
        directory.chmod(0o555)
        result = cli(*args, timeout=limit)
    else:
        if not can_mount_tmpfs():
            pytest.skip("needs unshare and user namespaces, for a read-only tmpfs")
        # A read-only mount stops root too; it lives in a mount namespace of the job's own.
        result = subprocess.run(
            [
                "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(directory),
                sys.executable, "-m", "runner", *args, *backend_args(),
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=limit,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert (
        f"tracking store {uri} cannot be created: the directory {directory} is read-only. "
        "Point tracking.uri (or MLFLOW_TRACKING_URI) at a file in a writable directory."
    ) in output
    assert "Traceback" not in output and "epoch 1/1" not in output
    assert list(directory.iterdir()) == []


def schema(db: Path) -> list[list[str]]:
    """The SQL of every table, index and trigger of the SQLite file ``db``, each as its
    sorted lines: MLflow's migrations write a table's constraints in an order that changes
    from one process to the next."""
    with sqlite3.connect(db) as connection:
        found = connection.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
        return sorted(sorted(line.strip(" \t,") for line in sql.splitlines()) for (sql,) in found)


def heads(db: Path) -> tuple:
    """The migration ``db`` is at (what MLflow checks when it opens a store), its SQLite
    user version, and the workspaces its migrations insert."""
    with sqlite3.connect(db) as connection:
        [(version,)] = connection.execute("SELECT version_num FROM alembic_version")
        [(user,)] = connection.execute("PRAGMA user_version")
        workspaces = connection.execute("SELECT * FROM workspaces").fetchall()
    return version, user, workspaces


def test_new_stores_are_copies_of_one_mlflow_made_and_each_gets_its_default_experiment(
    tmp_path, monkeypatch
):
    # The kept store is made from the dump of the empty store this MLflow makes
    # (runner/compat/mlflow-3.17.sql), not by its migrations: what follows checks that
    # dump against a store MLflow made itself.
    assert compat_mlflow.dump_path().is_file()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    made = MlflowClient(f"sqlite:///{tmp_path / 'made.db'}").get_experiment("0")
    kept = tmp_path / "cache" / "actlab" / "stores" / f"mlflow-{installed('mlflow')}.db"
    for name in ("first.db", "nested/second.db"):
        client = connect(f"sqlite:///{tmp_path / name}")
        [default] = client.search_experiments()
        # As MLflow makes it in a store it creates: its artifacts under this directory.
        assert (default.name, default.artifact_location) == ("Default", made.artifact_location)
        assert schema(tmp_path / name) == schema(tmp_path / "made.db")
        assert heads(tmp_path / name) == heads(tmp_path / "made.db")
        run = client.create_run(default.experiment_id)
        client.log_metric(run.info.run_id, "loss", 0.5)
        assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    # The kept store stays empty, and no partial copy is left anywhere.
    with sqlite3.connect(kept) as connection:
        assert connection.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    assert not list(tmp_path.rglob("*.partial"))


def test_a_new_store_is_made_by_mlflow_where_the_cache_folder_cannot_be(tmp_path, monkeypatch):
    (tmp_path / "a-file").touch()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    client = connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [experiment.name for experiment in client.search_experiments()] == ["Default"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "a-file", "mlflow.db", "mlflow.db.lock"
    ]  # fmt: skip


def compare(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m runner.compare ARGS`` as a user runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "runner.compare", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_a_store_path_that_is_a_directory_is_called_one_by_the_runner_and_compare(tmp_path, cli):
    folder = tmp_path / "stores"
    folder.mkdir()
    uri = f"sqlite:///{folder}"
    message = (
        f"tracking store {uri} is a directory ({folder}), not a file: a SQLite store is one "
        f"file. Name a file in it, such as sqlite:///{folder / 'mlflow.db'}, an MLflow store "
        "or a new one."
    )
    run = cli(f"tracking.uri={uri}", "dataset=iris", "model.units=[4]", "train.epochs=1")
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert message in output and "disk I/O error" not in output and "epoch 1/1" not in output
    read = compare("--uri", uri, "--out", str(tmp_path / "out"))
    assert (read.returncode, read.stderr) == (2, f"compare: {message}\n")
    # Nothing was made in the directory, nor a lock file beside it.
    assert list(folder.iterdir()) == [] and not (tmp_path / "stores.lock").exists()


def test_compare_fails_on_an_unreachable_server_within_seconds_as_the_runner_does(tmp_path, cli):
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    read = compare("--uri", uri, "--out", str(tmp_path / "out"))
    took = time.monotonic() - start
    unreachable = (
        f"tracking server {uri} is not reachable (ConnectionError). Start it (make server "
        "runs one on 127.0.0.1:5000), or use another store: "
    )
    way_out = "Point --uri (or MLFLOW_TRACKING_URI) at the MLflow store that the runner records in."
    assert (read.returncode, read.stderr) == (2, f"compare: {unreachable}{way_out}\n")
    # MLflow's own retries take over 4 minutes; the process's start alone takes up to half
    # a minute on two busy cores.
    assert took < 90, f"compare took {took:.0f} s"
    run = cli(f"tracking.uri={uri}", "dataset=iris", "train.epochs=1")
    assert run.returncode == 2 and unreachable in run.stdout + run.stderr


class _FailingServer(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers its health check and fails every other call with a
    503, which MLflow's client retries."""

    def _answer(self) -> None:
        """200 for the health check, 503 for anything else."""
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        """Nothing: each request would be a line on the test's stderr."""


def test_compare_gives_up_within_seconds_on_a_server_whose_calls_fail(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_port}"
    start = time.monotonic()
    try:
        # MLflow's own retries (7, with backoff) take minutes: this fails on the timeout.
        read = compare("--uri", uri, "--out", str(tmp_path / "out"))
    finally:
        server.shutdown()
    took = time.monotonic() - start
    assert read.returncode == 2 and read.stderr.startswith(f"compare: cannot search {uri}")
    assert "too many 503 error responses" in read.stderr
    # MLflow's own retries take over 4 minutes; the process's start alone takes up to half
    # a minute on two busy cores.
    assert took < 90, f"compare took {took:.0f} s"
