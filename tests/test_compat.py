"""Every reach into a library's internals (runner/compat/) falls back to the library's public
path on a version it was not written for: forced here, each one still trains, sweeps and
records, and says once that it runs without its patch."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import runner.compat
from runner import compat, stop
from runner.compat import hydra as compat_hydra
from runner.compat import launchers
from runner.compat import multiprocessing as compat_multiprocessing
from runner.compat import omegaconf as compat_omegaconf
from runner.compat import tensorflow as compat_tensorflow
from runner.tracking.store import connect
from tests.conftest import backend_args, finished_sweep

# A sweep run as `python -m runner` is, in a process where every library has a version that
# runner/compat was not written for.
# Every library at a version that runner/compat was not written for, in each process the
# sweep starts (its tracking process too): Python runs a sitecustomize module on its path
# at start.
UNKNOWN_VERSIONS = """
import runner.compat
import runner.compat.multiprocessing

runner.compat.installed = lambda package: "99.0"
runner.compat.multiprocessing.PYTHON = ()
"""


@pytest.fixture
def unknown_versions(monkeypatch):
    """Every library at a version that runner/compat was not written for."""
    monkeypatch.setattr(runner.compat, "installed", lambda package: "99.0")
    monkeypatch.setattr(compat_multiprocessing, "PYTHON", ())


def test_only_a_listed_minor_version_passes_the_guard_and_another_warns_once(monkeypatch):
    monkeypatch.setattr(compat, "installed", lambda package: "1.3.8")
    assert compat.written_for("hydra-core", ("1.3",), "a patch")
    monkeypatch.setattr(compat, "installed", lambda package: "1.30.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            assert not compat.written_for("hydra-core", ("1.3",), "a patch")
    assert [str(w.message) for w in caught] == [
        "hydra-core 1.30.0 is not one of the versions a patch was written for (1.3); running "
        "without it."
    ]


def test_a_fused_composed_sweep_that_logs_its_models_runs_on_unknown_versions(tmp_path, store):
    # The ConfigStore is copied as Hydra copies it, the jobs are composed by Hydra, swept by
    # Hydra's own grid sweeper and run by its run_job, and the models are saved as Keras
    # saves them.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(UNKNOWN_VERSIONS)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, PYTHONPATH=path)
    done = subprocess.run(
        [
            sys.executable, "-m", "runner", "-m", "hydra/launcher=fused",
            "hydra/sweeper=composing", "hydra.sweep.dir=sweep", "dataset=iris",
            "activation=relu,tanh", "model.units=[8]", "train.epochs=2",
            "tracking.log_model=true", *backend_args(),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for package, what in (
        ("hydra-core", "the ConfigStore copy patch"),
        ("hydra-core", "the composing sweeper's quick composition"),
        ("hydra-core", "the fused jobs' run_job"),
        ("keras", "saving a model without TensorFlow"),
        ("mlflow", "starting a new store from a kept empty one"),
    ):
        assert f"{package} 99.0 is not one of the versions {what} was written for" in output
    assert "fused group(s) of 2" in output
    _, jobs = finished_sweep(store, 2)
    models = MlflowClient(store).search_logged_models(list(set(jobs["experiment_id"])))
    assert sorted(m.source_run_id for m in models) == sorted(jobs["run_id"])
    assert len(list((tmp_path / "sweep").glob("*/.hydra/config.yaml"))) == 2


def test_a_new_store_on_an_unknown_mlflow_is_made_by_mlflow_and_none_is_kept(
    unknown_versions, tmp_path, monkeypatch, store
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="mlflow 99.0 is not one of the versions starting a new"):
        client = connect(store)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert list((tmp_path / "cache").rglob("*.db*")) == []


def test_a_job_composed_without_hydras_private_dirname_is_composed_by_hydra(unknown_versions):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["seed=1"])
    with pytest.warns(UserWarning, match="override_dirname of quickly composed jobs"):
        assert compat_hydra.overrides_dirname(parsed, "=", ",", []) is None


def test_the_grid_sweeper_on_an_unknown_hydra_is_the_one_hydras_config_names(monkeypatch):
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's own plugins, the basic sweeper's config among them
    monkeypatch.setattr(runner.compat, "installed", lambda package: "99.0")
    with pytest.warns(UserWarning, match="quick composition"):
        sweeper, quick = compat_hydra.grid_sweeper()
    assert (sweeper.__name__, quick) == ("BasicSweeper", False)


def _job(*overrides: str):
    """A job's config as a sweep composes it, with its Hydra node."""
    from hydra import compose, initialize_config_dir

    from runner.config import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=True)


def test_a_jobs_saved_configs_are_omegaconfs_text_and_libyaml_writes_them():
    job = _job("activation=tanh", "model.units=[128,64]")
    for cfg in (job, job.hydra, job.hydra.overrides.task):
        assert compat_omegaconf.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    # The whole config, Hydra's help texts included, takes libyaml's path.
    assert compat_omegaconf._same_either_way(OmegaConf.to_container(job, enum_to_str=True))


def test_a_fused_jobs_hydra_config_is_set_configs_without_copying_the_node():
    import copy

    from hydra.core.hydra_config import HydraConfig

    job = _job("seed=3")
    hydras, ours = copy.deepcopy(job), copy.deepcopy(job)
    HydraConfig.instance().set_config(hydras)
    expected = HydraConfig.instance().cfg
    found = compat_hydra._set_config(ours)
    assert OmegaConf.to_yaml(found) == OmegaConf.to_yaml(expected)
    assert found.hydra is ours.hydra and found.hydra._get_parent() is ours
    assert OmegaConf.is_readonly(found.hydra)
    # The node's interpolations read the job's config, as in Hydra's copy.
    assert found.hydra.job.name == expected.hydra.job.name
    assert found.hydra.run.dir.startswith("outputs/")


@pytest.mark.parametrize(
    "text",
    [
        "emoji \U0001f600",  # libyaml escapes it
        "next line\x85",  # libyaml writes \N
        "tab\there " * 12,  # double-quoted, broken into lines another way
        " \nspace before a break " * 8,
        "é, 日本",
        "a-long-key-" * 12,  # Python's emitter writes it as "? key"
    ],
)
def test_text_libyaml_would_write_otherwise_is_written_by_omegaconf(text):
    cfg = OmegaConf.create({"text": text, "list": [text, {"deep": text}], text: {"x": 1}})
    assert not compat_omegaconf._same_either_way(OmegaConf.to_container(cfg))
    assert compat_omegaconf.to_yaml(cfg) == OmegaConf.to_yaml(cfg)


def test_values_but_strings_numbers_booleans_and_null_are_written_by_omegaconf():
    cfg = OmegaConf.create({"seed": 1, "rate": 0.5, "on": True, "none": None, "raw": b"\x00"})
    assert not compat_omegaconf._same_either_way(OmegaConf.to_container(cfg))
    assert compat_omegaconf.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    del cfg["raw"]
    assert compat_omegaconf._same_either_way(OmegaConf.to_container(cfg))


def test_saved_configs_are_written_by_omegaconf_on_an_unknown_omegaconf(unknown_versions):
    compat_omegaconf._libyaml_dumper.cache_clear()
    cfg = OmegaConf.create({"seed": 1, "units": [8, 8], "name": "1.0"})
    try:
        with pytest.warns(UserWarning, match="the saved configs' libyaml emitter"):
            assert compat_omegaconf.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    finally:
        compat_omegaconf._libyaml_dumper.cache_clear()


def test_tensorflows_registry_is_left_as_it_is_on_an_unknown_tensorflow(unknown_versions):
    with pytest.warns(UserWarning, match="the gradient-registry cleanup"):
        assert compat_tensorflow.gradient_registry() is None


def test_a_worker_exits_without_freeing_semaphores_on_an_unknown_python(unknown_versions):
    with pytest.warns(UserWarning, match="freeing a worker's semaphores"):
        compat_multiprocessing.free_semaphores()


@pytest.mark.parametrize(
    "patch,what",
    [
        (launchers.loky_workers_end_their_jobs_first, "graceful stop of joblib's workers"),
        (launchers.submitit_local_jobs_take_ctrl_c, "local jobs' handling of Ctrl-C"),
        (launchers.ray_jobs_cancelled_on_a_stop, "the cancelling of Ray jobs"),
    ],
    ids=["joblib", "submitit", "ray"],
)
def test_a_launchers_workers_stop_as_the_launcher_stops_them_on_an_unknown_version(
    unknown_versions, patch, what
):
    stoppers = list(stop.stoppers)
    with pytest.warns(UserWarning, match=what):
        patch()
    assert stop.stoppers == stoppers
