"""Tracking through a real ``mlflow server`` on a free local port, started and stopped by
the test: a sweep records everything; with the server down, a clear error and no training;
a parallel sweep through a server whose store is a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import finished_sweep, free_port, mlflow_server, search

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path):
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as started:
        yield started


def runner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_sweep_through_a_tracking_server_records_every_metric(server, tmp_path):
    uri, _ = server
    # A server without authentication ignores the credentials; no record may hold them.
    with_password = uri.replace("http://", "http://ann:s3cret@")
    result = runner(
        tmp_path, "-m", f"tracking.uri={with_password}", "activation=relu,tanh",
        "model.units=[8]", "train.epochs=2", "tracking.figure=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr, result.stdout + result.stderr
    children = search(uri, "tags.role = 'job'")
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    assert len(search(uri, "tags.role = 'sweep'")) == 1
    client = MlflowClient(uri)
    for run_id in children["run_id"]:
        for name in ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0"):
            assert len(client.get_metric_history(run_id, name)) == 2
        # A sweep's job keeps its config in its params and Hydra directory, not as files.
        assert {a.path for a in client.list_artifacts(run_id)} == {"training_curves.png"}
        run = client.get_run(run_id)
        assert run.data.params["model.units"] == "[8]"
        assert "s3cret" not in json.dumps([run.data.params, run.data.tags])
        assert run.data.params["tracking.uri"] == uri.replace("http://", "http://ann:***@")
        assert "activation=" in run.data.tags["overrides"]


def test_a_server_that_is_down_is_a_clear_error_before_training(server, tmp_path):
    uri, process = server
    process.terminate()
    process.wait(timeout=30)
    start = time.monotonic()
    result = runner(tmp_path, f"tracking.uri={uri}", "train.epochs=1")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert f"tracking server {uri} is not reachable" in output
    assert "epoch 1/1" not in output and "Traceback" not in output
    assert time.monotonic() - start < 60


# Long enough on JAX (a few ms an epoch) for the server to go away in the middle.
EPOCHS = 3000


def test_a_server_that_goes_away_mid_run_costs_seconds_and_loses_no_metric(server, tmp_path):
    uri, process = server
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    job = subprocess.Popen(
        [
            sys.executable, "-m", "runner", f"tracking.uri={uri}", "model.units=[32]",
            f"train.epochs={EPOCHS}", "train.steps_per_execution=1",
        ],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = MlflowClient(uri)
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline and job.poll() is None, "no epoch reached the server"
        runs = search(uri, "tags.role = 'job'")
        if not runs.empty and len(client.get_metric_history(runs.run_id.item(), "loss")) >= 2:
            break
        time.sleep(0.5)
    run_id = runs.run_id.item()
    process.terminate()
    process.wait(timeout=30)
    killed = time.monotonic()
    output, _ = job.communicate(timeout=300)

    # The rest of training, then seconds per failed call rather than MLflow's minutes.
    assert time.monotonic() - killed < 100
    assert job.returncode == 1, output
    assert f"is incomplete in {uri}" in output and "the status FINISHED" in output
    assert f"epoch {EPOCHS}/{EPOCHS}" in output and "Traceback" not in output
    (kept_in,) = tmp_path.glob("outputs/*/*/unrecorded.json")
    assert str(kept_in) in output
    kept = json.loads(kept_in.read_text())
    assert (kept["run_id"], kept["status"], kept["outcome"]) == (run_id, "FINISHED", "completed")
    # What the server's store holds and what the file keeps make up every epoch. (A batch in
    # flight as the server went down can be in both: the server stored it, but the answer
    # never came back.)
    stored = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")
    assert stored.get_run(run_id).info.status == "RUNNING"
    for name in ("loss", "val_accuracy", "grad_norm/hidden_0"):
        recorded = [m.step for m in stored.get_metric_history(run_id, name)]
        unrecorded = [m["step"] for m in kept["metrics"] if m["key"] == name]
        assert set(recorded) | set(unrecorded) == set(range(EPOCHS)), name
    assert "test_accuracy" in {m["key"] for m in kept["metrics"]}


def postgres_account() -> dict[str, int]:
    """Popen's ``user`` and ``group`` for PostgreSQL's programs, which refuse to run as root:
    as root, the ``postgres`` account (made by Debian's package), else ``nobody``; as anyone
    else, that user."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    return {"user": account.pw_uid, "group": account.pw_gid}


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the test's own: a new cluster in a temporary directory, trust
    authentication, listening on 127.0.0.1 only, on a free port, its socket in that
    directory; the URI of its database ``mlflow``. Stopped and deleted afterwards."""
    if shutil.which("initdb") is None or shutil.which("postgres") is None:
        pytest.skip("needs PostgreSQL's initdb and postgres on PATH (apt-get install postgresql)")
    import psycopg

    account = postgres_account()
    # Not under pytest's tmp_path: its parent is private to the user running the tests.
    home = Path(tempfile.mkdtemp(prefix="actlab-pg-"))
    if account:
        os.chown(home, account["user"], account["group"])
    data = home / "data"
    subprocess.run(
        ["initdb", "-D", str(data), "--auth=trust", "--username=mlflow", "--no-locale",
         "--encoding=UTF8", "--no-sync"],
        cwd=home, check=True, capture_output=True, **account,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        ["postgres", "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(home),
         "-c", "fsync=off"],
        cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **account,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = psycopg.connect(
                    host="127.0.0.1", port=port, user="mlflow", dbname="postgres", autocommit=True
                )
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
        with admin:
            admin.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        # SIGINT: PostgreSQL's fast shutdown, which ends the sessions still open.
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        shutil.rmtree(home)


def test_a_parallel_sweep_through_a_server_on_postgresql_records_every_metric(postgres, tmp_path):
    import psycopg

    # SQLAlchemy's name for the database with its driver, psycopg 3 (the postgres extra).
    store = postgres.replace("postgresql://", "postgresql+psycopg://")
    with mlflow_server(store, tmp_path / "artifacts") as (uri, _):
        result = runner(
            tmp_path, "-m", f"tracking.uri={uri}", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "activation=relu,tanh", "seed=0,1", "dataset=iris",
            "model.units=[8]", "train.epochs=2",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        _, children = finished_sweep(uri, 4)
        client = MlflowClient(uri)
        for run_id in children["run_id"]:
            for name in ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0"):
                assert len(client.get_metric_history(run_id, name)) == 2, name
    # What the server reported is what PostgreSQL holds.
    with psycopg.connect(postgres) as connection:
        statuses = connection.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert statuses.fetchall() == [("FINISHED", 5)]
        epochs = connection.execute("SELECT count(*) FROM metrics WHERE key = 'val_accuracy'")
        assert epochs.fetchone() == (8,)
