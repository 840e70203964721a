"""Sweeps through launchers that run each job in a process of its own, for real: submitit's
local executor (the code path of hydra/launcher=submitit_slurm, less sbatch) and Ray on a
local cluster. Every job must find the one parent run that the sweep's own process made, and
take only its share of the cores; and on Ctrl-C or SIGTERM, every launcher the README
documents must stop its sweep as the basic launcher does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from runner.sweep import sweep_size, threads_per_job
from tests.conftest import CONF, backend_args, finished_sweep, search
from tests.test_reliability import wait_for_jobs

TINY = ["activation=relu,tanh", "dataset=iris", "model.units=[8]", "train.epochs=2"]


def hydra_node(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


def test_each_launcher_gives_a_job_its_share_of_the_cores():
    cores = os.cpu_count() or 1
    assert threads_per_job(hydra_node()) is None
    assert threads_per_job(hydra_node("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")) == max(
        1, cores // 2
    )
    assert threads_per_job(hydra_node("hydra/launcher=submitit_local")) is None
    local = hydra_node("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3")
    assert threads_per_job(local) == 3


def test_the_slurm_preset_is_submitits_slurm_launcher_with_the_keys_a_cluster_sets():
    launcher = hydra_node("hydra/launcher=slurm", "hydra.launcher.partition=gpu").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu"
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == (60, 4, 8)
    assert threads_per_job(hydra_node("hydra/launcher=slurm")) == 4


@pytest.mark.parametrize(
    "config,command_line,size",
    [
        ([], ["activation=relu,tanh", "seed=0,1,2"], 6),
        # The experiment's params sweep 4 activations and 10 seeds; the command line's seeds win.
        (["experiment=activations"], [], 40),
        (["experiment=activations"], ["seed=0,1"], 8),
        (["hparams_search=optuna"], ["dataset=wine"], 20),
        # The grid sweeper refuses an interval, in its own words.
        ([], ["optimizer.learning_rate=interval(0.001,0.1)"], None),
    ],
)
def test_a_sweeps_size_is_its_grid_or_its_trials(config, command_line, size):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", overrides=config, return_hydra_config=True)
    # As the sweep's own config holds them: every override of its command line, sweeps too.
    with open_dict(master):
        master.hydra.overrides.task = [*config, *command_line]
    assert sweep_size(master) == size


def assert_one_sweep_of_finished_jobs(store: str, threads: str) -> None:
    """Two FINISHED jobs with every epoch's metrics, both under the one parent run, each
    trained in a process other than the sweep's, with ``threads`` TensorFlow threads."""
    parent, children = finished_sweep(store, 2)
    assert set(children["tags.sweep_id"]) == {parent["tags.sweep_id"]}
    assert parent["tags.pid"] not in set(children["tags.pid"])
    assert set(children["params.train.threads"]) == {threads}
    client = MlflowClient(store)
    for run_id in children["run_id"]:
        for name in ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm/hidden_0"):
            assert len(client.get_metric_history(run_id, name)) == 2, name


@pytest.mark.slow
def test_a_submitit_sweep_runs_each_job_in_a_process_of_its_own(cli, store):
    result = cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_one_sweep_of_finished_jobs(store, threads="1")
    assert len(set(search(store, "tags.role = 'job'")["tags.pid"])) == 2


@pytest.mark.slow
def test_a_ray_sweep_on_a_local_cluster_records_every_job(cli, store):
    pytest.importorskip("ray", reason="needs the ray extra: `make test-ray` runs it in .venv-ray")
    result = cli(
        "-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=null",
        "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
        *TINY,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # A Ray task reserves 1 CPU unless hydra.launcher.ray.remote.num_cpus says otherwise.
    assert_one_sweep_of_finished_jobs(store, threads="1")


# Each launcher's sweep of jobs long enough to be stopped in the middle, and how many of
# them train at once: joblib's 2 workers and Ray's 2 CPUs take 2 of 4 jobs, submitit's local
# executor starts both of its jobs, and the fused launcher trains its 4 as one group.
STOPPED = {
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2,3"], 2),
    "submitit": (
        ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "seed=0,1"], 2
    ),
    "fused": (["hydra/launcher=fused", "seed=0,1,2,3"], 4),
    "ray": (
        [
            "hydra/launcher=ray", "hydra.launcher.ray.init.address=null",
            "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false", "seed=0,1,2,3",
        ],
        2,
    ),
}  # fmt: skip
# Batches of 2, so that few epochs have run when a sweep's job first writes what it logged
# (after 30 s): in batches of 32, a fused group's thousands of epochs by then took longer to
# write than the rest of the test.
STOPPED_EPOCHS = 20000


def processes_of(pid: int) -> set[int]:
    """The live processes in the process group of ``pid`` and below ``pid``, read in /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command, in brackets: the state, the parent and the process group.
            state, parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if state != "Z":
            table[int(stat.parent.name)] = (int(parent), int(group))
    found = {other for other, (_, group) in table.items() if group == pid}
    below = [pid]
    while below:
        parent = below.pop()
        children = {other for other, (its, _) in table.items() if its == parent}
        found |= children
        below += children
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes in /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param("joblib", marks=pytest.mark.slow),
        pytest.param("submitit", marks=pytest.mark.slow),
        "fused",
        pytest.param("ray", marks=pytest.mark.slow),
    ],
)
def test_a_signal_stops_each_launchers_sweep_as_the_basic_launcher_does(
    tmp_path, store, launcher, how
):
    if launcher == "ray":
        pytest.importorskip("ray", reason="needs the ray extra: `make test-ray` runs it")
    args, at_once = STOPPED[launcher]
    # Its own session, as a terminal starts a command: Ctrl-C is SIGINT to the whole group,
    # workers included; SIGTERM (from kill, SLURM or Kubernetes) reaches the sweep's process.
    # The output goes to a file: a pipe that no one reads until the end fills up with the
    # epochs' lines, and the jobs wait on it.
    log = tmp_path / "output.txt"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "runner", "-m", "hydra.sweep.dir=study", *args,
                "model.units=[16]", f"train.epochs={STOPPED_EPOCHS}",
                "train.batch_size=2", "train.steps_per_execution=1", *backend_args(),
            ],
            cwd=tmp_path, env=dict(os.environ, MLFLOW_TRACKING_URI=store),
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        training = wait_for_jobs(store, 2, at_once, timeout=300)
        workers = processes_of(process.pid) - {process.pid}
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        for pid in processes_of(process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert process.returncode == 130, output
    assert "Traceback" not in output
    assert output.count("resume=true") == 1, output
    assert "Re-run the same command with resume=true to run only the missing ones." in output

    # The jobs that were training ended KILLED with what they had logged, and no other job
    # started: the others have no run, and no output directory.
    jobs = search(store, "tags.role = 'job'")
    assert sorted(jobs["run_id"]) == sorted(training)
    assert set(jobs["status"]) == {"KILLED"}
    assert set(jobs["tags.outcome"]) == {"interrupted"}
    client = MlflowClient(store)
    for run_id in training:
        assert 2 <= len(client.get_metric_history(run_id, "loss")) < STOPPED_EPOCHS
    # Hydra names a job's directory after its number, which is its seed here.
    started = {path.name for path in (tmp_path / "study").iterdir() if path.name.isdigit()}
    assert started == set(jobs["params.seed"]), started
    assert search(store, "tags.role = 'sweep'")["status"].tolist() == ["KILLED"]

    # No worker outlives the sweep.
    deadline = time.monotonic() + 10
    while (workers & processes_of(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers & processes_of(process.pid)
    assert not processes_of(process.pid)
