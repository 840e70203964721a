"""The backend contract: JAX by default without TensorFlow, and the sweeps a process that
keeps one backend cannot run, refused before any job runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import finished_sweep, search

TINY = ["dataset=iris", "model.units=[8]", "train.epochs=2"]

# Runs the runner's own entry point in this interpreter, then says what was imported.
JOB = """
import runpy, sys
sys.argv = ["runner", *sys.argv[1:]]
try:
    runpy.run_module("runner", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print("modules:", "tensorflow" in sys.modules, "jax" in sys.modules)
"""


def test_a_tracked_job_on_jax_never_imports_tensorflow(tmp_path, store):
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run(
        [sys.executable, "-c", JOB, *TINY, "tracking.log_model=true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "modules: False True" in done.stdout
    run = search(store).iloc[0]
    assert (run["status"], run["params.backend"]) == ("FINISHED", "jax")
    assert 0 <= run["metrics.test_accuracy"] <= 1
    # Saving the trained model, which Keras does by asking for TensorFlow, included.
    (model,) = MlflowClient(store).search_logged_models([run["experiment_id"]])
    assert (model.source_run_id, model.status.name) == (run["run_id"], "READY")


@pytest.mark.parametrize("name", ["jax", "tensorflow"])
def test_a_job_starts_with_its_own_line_and_no_framework_banner(tmp_path, name):
    # As from a user's shell: none of the settings that quieten the frameworks, a new store.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KERAS_", "TF_", "MLFLOW_"))
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            f"backend={name}",
            *TINY,
            f"tracking.uri=sqlite:///{tmp_path / 'new' / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        env=dict(env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    first = done.stdout.splitlines()[0]
    assert "[runner][INFO] - relu-categorical_crossentropy-iris-s0: training on" in first, (
        done.stdout
    )
    assert first.endswith(f"({name})")


@pytest.mark.parametrize(
    "args,message",
    [
        (["backend=jax,tensorflow"], "cannot be swept by FusedLauncher"),
        (["device=auto,cpu"], "device=auto,cpu cannot be swept by FusedLauncher"),
        (
            ["hydra/launcher=fused", "train.threads=1,2"],
            "train.threads=1,2 cannot be swept by FusedLauncher: it runs every job in this one "
            "process, and a process keeps the thread pools its backend started",
        ),
        (
            ["hydra/launcher=fused", "hydra.launcher.max_group=0", "seed=0,1"],
            "hydra.launcher.max_group=0 is not allowed",
        ),
    ],
    ids=["backend", "device", "threads", "max_group"],
)
def test_a_sweep_one_process_cannot_run_is_refused_before_any_job(cli, store, args, message):
    result = cli("-m", *args, *TINY)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message in output and "Traceback" not in output
    assert search(store).empty


def test_a_tensorflow_sweep_runs_its_jobs_one_by_one_saying_so(cli, store):
    # The default launcher fuses jobs on JAX; TensorFlow trains one model at a time, so the
    # same command runs them as Hydra's basic launcher does, and says so once.
    result = cli("-m", "backend=tensorflow", "seed=0,1", *TINY)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    said = "backend=tensorflow trains one model at a time (fused groups are JAX's): each job"
    assert output.count(said) == 1
    assert "fused group g" not in output
    _, jobs = finished_sweep(store, 2)
    assert set(jobs["params.backend"]) == {"tensorflow"}
    assert "tags.fused_group" not in jobs or jobs["tags.fused_group"].isna().all()
