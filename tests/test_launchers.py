"""Sweeps through launchers that run each job in a process of its own, for real: submitit's
local executor (the code path of hydra/launcher=submitit_slurm, less sbatch) and Ray on a
local cluster. Every job must find the one parent run that the sweep's own process made, and
take only its share of the cores."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from runner.__main__ import share_of_cores
from runner.sweep import sweep_size
from tests.conftest import CONF, finished_sweep, search

TINY = ["activation=relu,tanh", "dataset=iris", "model.units=[8]", "train.epochs=2"]


def hydra_node(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


def test_each_launcher_gives_a_job_its_share_of_the_cores():
    cores = os.cpu_count() or 1
    assert share_of_cores(hydra_node()) is None
    assert share_of_cores(hydra_node("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")) == max(
        1, cores // 2
    )
    assert share_of_cores(hydra_node("hydra/launcher=submitit_local")) is None
    local = hydra_node("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3")
    assert share_of_cores(local) == 3


def test_the_slurm_preset_is_submitits_slurm_launcher_with_the_keys_a_cluster_sets():
    launcher = hydra_node("hydra/launcher=slurm", "hydra.launcher.partition=gpu").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu"
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb) == (60, 4, 8)
    assert share_of_cores(hydra_node("hydra/launcher=slurm")) == 4


@pytest.mark.parametrize(
    "config,command_line,size",
    [
        ([], ["activation=relu,tanh", "seed=0,1,2"], 6),
        # The experiment's params sweep 4 activations and 3 seeds; the command line's seeds win.
        (["experiment=activations"], [], 12),
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
