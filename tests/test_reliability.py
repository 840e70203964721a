"""Faults provoked for real: a subprocess sent SIGTERM, SIGINT or SIGKILL in the middle
of an epoch, and the statuses, outcomes and metric counts it leaves in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import search

LONG = ["model.units=[32]", "train.epochs=400", "train.steps_per_execution=1"]


def start(tmp_path: Path, store: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epochs(store: str, epochs: int, timeout: float = 120) -> str:
    """The id of the RUNNING job run once it has logged ``epochs`` epochs of loss."""
    client = MlflowClient(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(store.removeprefix("sqlite:///")).exists():
            runs = search(store, "tags.role = 'job' and attributes.status = 'RUNNING'")
            for run_id in runs.get("run_id", []):
                if len(client.get_metric_history(run_id, "loss")) >= epochs:
                    return run_id
        time.sleep(0.5)
    raise AssertionError(f"no run reached {epochs} epochs in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_training_ends_the_run_killed_and_keeps_its_metrics(tmp_path, store, sig):
    process = start(tmp_path, store, *LONG)
    run_id = wait_for_epochs(store, 2)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    run = MlflowClient(store).get_run(run_id)
    assert (run.info.status, run.data.tags["outcome"]) == ("KILLED", "interrupted")
    kept = len(MlflowClient(store).get_metric_history(run_id, "loss"))
    assert 2 <= kept < 400


def test_sigkill_leaves_a_run_that_the_next_start_marks_killed(tmp_path, store, cli):
    process = start(tmp_path, store, *LONG)
    run_id = wait_for_epochs(store, 1)
    process.kill()
    process.wait(timeout=30)
    assert MlflowClient(store).get_run(run_id).info.status == "RUNNING"
    result = cli("model.units=[4]", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    assert "marked 1 run(s) left RUNNING by a process that is gone as KILLED" in result.stdout
    run = MlflowClient(store).get_run(run_id)
    assert (run.info.status, run.data.tags["outcome"]) == ("KILLED", "interrupted")


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_with_only_the_missing_jobs(tmp_path, store, cli):
    # One batch per call makes the 150-epoch job slow enough to be caught in the middle.
    sweep = [
        "-m", "train.epochs=1,150", "hydra.sweep.dir=study", "model.units=[16]",
        "train.steps_per_execution=1",
    ]  # fmt: skip
    process = start(tmp_path, store, *sweep)
    wait_for_epochs(store, 2)  # the 1-epoch job has finished; the 150-epoch one is training
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "re-run the same command with resume=true" in output.lower()
    runs = search(store).set_index("tags.role")
    assert runs.loc["sweep", "status"] == "KILLED"
    jobs = search(store, "tags.role = 'job'").set_index("params.train.epochs")
    assert jobs.loc["1", "status"] == "FINISHED"
    assert jobs.loc["150", ["status", "tags.outcome"]].tolist() == ["KILLED", "interrupted"]

    result = cli(*sweep, "resume=true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("skipped") == 1
    # The revived parent belongs to the new process: the orphan check leaves it alone.
    assert "marked" not in result.stdout
    finished = search(store, "tags.role = 'job' and attributes.status = 'FINISHED'")
    assert sorted(finished["params.train.epochs"]) == ["1", "150"]
    assert finished["tags.sweep_id"].nunique() == 1
    assert search(store, "tags.role = 'sweep'").iloc[0]["status"] == "FINISHED"


def test_a_corrupt_store_is_a_clear_error_and_is_left_as_it_was(tmp_path, cli):
    junk = bytes(range(256)) * 20
    path = tmp_path / "corrupt.db"
    path.write_bytes(junk)
    result = cli(f"tracking.uri=sqlite:///{path}", "train.epochs=1")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert f"tracking store sqlite:///{path} cannot be used" in output
    assert "file is not a database" in output and "Traceback" not in output
    assert path.read_bytes() == junk


@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_store_lose_nothing(cli, store):
    result = cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8", "seed=0,1,2,3,4,5,6,7",
        "model.units=[8]", "train.epochs=3",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "database is locked" not in output
    children = search(store, "tags.role = 'job'")
    assert sorted(children["status"]) == ["FINISHED"] * 8
    client = MlflowClient(store)
    points = sum(
        len(client.get_metric_history(run_id, name))
        for run_id in children["run_id"]
        for name in ("loss", "val_loss", "accuracy", "val_accuracy")
    )
    assert points == 8 * 3 * 4


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
@pytest.mark.xfail(
    strict=True,
    reason="TensorFlow 2.21 keeps about 4 MB per trained model even after "
    "keras.backend.clear_session() and gc (keras-team/keras#17458; plain model.fit leaks the "
    "same here): 100 jobs grow by about 380 MB. Strict, so that a fix shows as a failure.",
)
def test_a_hundred_jobs_in_one_process_release_their_memory(make_cfg, store):
    from runner import job
    from runner.config import validate_values

    rss = {}
    for i in range(1, 101):
        cfg = make_cfg(
            f"seed={i}", "model.units=[8]", "train.epochs=1", "diagnostics.enabled=false"
        )
        validate_values(cfg)
        job.execute(job.prepare(cfg, None), [], None)
        rss[i] = rss_mb()
    assert rss[100] - rss[10] < 200, rss
    assert len(search(store, "attributes.status = 'FINISHED'")) == 100
