"""Tracking through a real ``mlflow server`` on a free local port, started and stopped by
the test: a sweep records everything; with the server down, a clear error and no training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.conftest import search

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        process.kill()
        raise AssertionError("mlflow server did not start in 60 s")
    yield uri, process
    process.terminate()
    process.wait(timeout=30)


def runner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_sweep_through_a_tracking_server_records_every_metric(server, tmp_path):
    uri, _ = server
    result = runner(
        tmp_path, "-m", f"tracking.uri={uri}", "activation=relu,tanh",
        "model.units=[8]", "train.epochs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    children = search(uri, "tags.role = 'job'")
    assert len(children) == 2 and set(children["status"]) == {"FINISHED"}
    assert len(search(uri, "tags.role = 'sweep'")) == 1
    client = MlflowClient(uri)
    for run_id in children["run_id"]:
        for name in ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0"):
            assert len(client.get_metric_history(run_id, name)) == 2
        files = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "model_summary.txt", "training_curves.png"} <= files


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
