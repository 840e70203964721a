"""Shared fixtures: a fresh SQLite MLflow store per test, Hydra's Compose API over the real
configs, and the runner as a real subprocess.

The suite runs on one Keras backend per pytest process, ``--backend`` (jax by default):
a process keeps the backend Keras was first imported with. The tests whose results depend
on the backend are marked ``backend``; ``make test-tensorflow`` runs those on TensorFlow.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from runner.checks import validate_values
from runner.config import CONF, register
from runner.data import Dataset
from runner.jobs import state
from runner.jobs.spec import JobContext
from runner.sweep import Sweep

register()

# This folder: a runner subprocess finds tests/activations_for_tests.py on PYTHONPATH here.
TESTS = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=["jax", "tensorflow"],
        default="jax",
        help="the Keras backend of every job this run trains (default: jax)",
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ["KERAS_BACKEND"] = config.getoption("--backend")
    # Where the runner's links point (`make ui PORT=...` exports them): the tests expect
    # MLflow's default address unless they set their own.
    for name in ("MLFLOW_HOST", "MLFLOW_PORT"):
        os.environ.pop(name, None)


def backend_args() -> list[str]:
    """The override that puts a runner subprocess on this run's backend; none for the
    default."""
    backend = os.environ["KERAS_BACKEND"]
    return [] if backend == "jax" else [f"backend={backend}"]


@pytest.fixture(scope="session")
def backend(pytestconfig: pytest.Config) -> str:
    """The Keras backend of this test run."""
    return pytestconfig.getoption("--backend")


@pytest.fixture
def process_state() -> Iterator[state.ProcessState]:
    """The process's state as a new process starts it: no dataset, store, program or sweep
    kept from the tests before; the same again for the tests after."""
    state.reset()
    yield state.STATE
    state.reset()


def plan_job(cfg: DictConfig, sweep: Sweep | None = None):
    """The planned job ``cfg``, a job of ``sweep`` when given, as a launcher plans it."""
    from runner.jobs.plan import plan

    return plan(cfg, JobContext(sweep=sweep))


def run_job(cfg: DictConfig, sweep: Sweep | None = None) -> dict[str, float]:
    """Plan, train and record the job ``cfg``; its last-epoch validation metrics and its
    test metrics."""
    from runner.jobs.execute import execute

    return execute([plan_job(cfg, sweep)])[0]


def train_alone(plan, net=None, switching: bool = False):
    """Train the planned job's model ``net`` (its own, freshly built, when None) alone and
    unrecorded, as a batch of one; ``switching`` as in :class:`runner.engine.Settings`."""
    from runner import engine
    from runner.jobs.execute import build, member, settings

    net = build(plan) if net is None else net
    (result,) = engine.train(
        [member(plan.spec, net)],
        plan.dataset,
        settings(plan.spec, switching),
        programs=state.STATE.programs,
    )
    return result


@pytest.fixture
def store(tmp_path: Path) -> str:
    """The URI of an empty SQLite store in the test's own directory."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(store: str, backend: str) -> Callable[..., DictConfig]:
    """Compose the real config with overrides, tracking into the test's store, on the
    run's backend."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config", overrides=[f"tracking.uri={store}", f"backend={backend}", *overrides]
            )

    return make


@pytest.fixture
def dataset_cfg(make_cfg):
    """A dataset's config by name, with ``dataset.`` overrides, checked as a job's is."""

    def make(name: str, *overrides: str):
        cfg = make_cfg(f"dataset={name}", *[f"dataset.{o}" for o in overrides])
        validate_values(cfg)
        return cfg.dataset

    return make


@pytest.fixture
def cli(tmp_path: Path, store: str) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m runner ARGS`` in the test's directory against the test's store, on
    the run's backend when that is not the default."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, MLFLOW_TRACKING_URI=store)
        return subprocess.run(
            [sys.executable, "-m", "runner", *args, *backend_args()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(backend: str, artifacts: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` over the store ``backend`` on a free local port, once its health
    check answers (it creates or migrates the store's schema first); stopped on leaving."""
    port = free_port()
    # One web worker and no job runner (MLflow's GenAI jobs): the default four workers and
    # the job runner each import MLflow, which takes minutes on two busy cores.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own process group, so that stopping it stops the web server it starts too.
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("mlflow server did not start in 120 s")
    try:
        yield uri, process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def search(store: str, filter_string: str = "") -> pd.DataFrame:
    """Every run of the store that matches the filter, in every experiment."""
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(filter_string=filter_string, search_all_experiments=True)


def finished_sweep(store: str, jobs: int) -> tuple[pd.Series, pd.DataFrame]:
    """Assert that the store holds one sweep: a FINISHED parent run with ``jobs`` FINISHED
    job runs under it; return the parent and the jobs."""
    parents = search(store, "tags.role = 'sweep'")
    children = search(store, "tags.role = 'job'")
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent = parents.iloc[0]
    assert len(children) == jobs and set(children["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    return parent, children


def running(store: str) -> int:
    """How many runs of the store are RUNNING; 0 also when the store was never created."""
    if not Path(store.removeprefix("sqlite:///")).exists():
        return 0
    runs = search(store)
    return 0 if runs.empty else int((runs["status"] == "RUNNING").sum())


def logged_model_scores(store: str, run_id: str, dataset: Dataset) -> dict[str, float]:
    """The categorical cross-entropy and accuracy on the test split of a classifier's logged
    model, loaded as a user loads it, with ``mlflow.pyfunc``."""
    # Not at the top: Keras takes its backend at import, set once pytest is configured.
    import keras

    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    predictions = model.predict(dataset.x_test)
    onehot = np.eye(dataset.classes, dtype=np.float32)[dataset.y_test]
    loss = keras.losses.get("categorical_crossentropy")(onehot, predictions)
    return {
        "test_loss": float(keras.ops.mean(loss)),
        "test_accuracy": float(np.mean(np.argmax(predictions, axis=-1) == dataset.y_test)),
    }
