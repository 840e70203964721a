"""The MLflow UI addresses the runner prints follow the host and port `make ui` serves on."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from runner.track import ROOT, ui_url

RUN_PAGE = "/#/experiments/1/runs/abc?workflowType=machine_learning"


@pytest.mark.parametrize(
    "host,port,address",
    [
        (None, None, "http://127.0.0.1:5000"),
        (None, "5001", "http://127.0.0.1:5001"),
        ("localhost", "8080", "http://localhost:8080"),
        ("0.0.0.0", None, "http://127.0.0.1:5000"),
        ("::", "5001", "http://[::1]:5001"),
    ],
)
def test_a_link_to_a_sqlite_store_follows_mlflow_host_and_port(monkeypatch, host, port, address):
    for name, value in (("MLFLOW_HOST", host), ("MLFLOW_PORT", port)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert ui_url("sqlite:///mlflow.db", "1", "abc") == address + RUN_PAGE
    # A tracking server serves its own UI, wherever `make ui` would.
    assert ui_url("http://tracker:5005/", "1", "abc") == "http://tracker:5005" + RUN_PAGE


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
@pytest.mark.parametrize(
    "args,env,port",
    [([], {}, "5000"), (["PORT=5001"], {}, "5001"), ([], {"MLFLOW_PORT": "5002"}, "5002")],
)
def test_make_ui_serves_where_the_runner_links(monkeypatch, args, env, port):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    served = subprocess.run(
        ["make", "-s", "-n", "ui", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert f"--host 127.0.0.1 --port {port}\n" in served.stdout, served.stderr
    # The address the runner's links take in the environment that make gives its commands.
    code = "from runner.track import ui_address; print(ui_address())"
    show = f"link: ; @{sys.executable} -c '{code}'"
    link = subprocess.run(
        ["make", "-s", "--eval", show, "link", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert link.stdout == f"http://127.0.0.1:{port}\n", link.stderr
