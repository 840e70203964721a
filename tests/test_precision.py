"""The device and the numeric precision a job trains with: ``device=auto`` on a GPU, and
``train.mixed_precision`` (float16 hidden layers, float32 output) on the CPU there is."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner import backend as backends
from runner import data, engine, model
from runner.config import DatasetConfig, Encoding
from runner.engine.common import mixed
from runner.jobs.execute import build
from tests.conftest import plan_job, run_job, search, train_alone

pytestmark = pytest.mark.backend

MIXED = ["train.mixed_precision=true", "model.units=[16,8]", "train.epochs=2"]


def test_device_auto_trains_on_a_gpu_when_there_is_one(monkeypatch, backend):
    # The one mock of the suite: a GPU, which this machine cannot have.
    if backend == "jax":
        monkeypatch.setattr(backends, "jax_gpus", lambda jax: ["cuda:0"])
        assert backends.use("jax", "auto", None, chosen={}) == "gpu"
        return
    import tensorflow as tf

    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    growth, hidden = {}, []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else []
    )
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", growth.__setitem__)
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: hidden.append(args))
    assert backends.use("tensorflow", "auto", None, chosen={}) == "gpu"
    assert growth == {gpu: True}
    assert hidden == []


def test_mixed_precision_builds_float16_hidden_layers_and_a_float32_output(make_cfg):
    plan = plan_job(make_cfg(*MIXED, "activation=[relu,sigmoid]", "tracking.enabled=false"))
    net = build(plan)
    hidden = [layer for layer in net.layers if layer.name.startswith("hidden_")]
    assert [layer.dtype_policy.name for layer in hidden] == ["mixed_float16"] * 2
    assert all(layer.compute_dtype == "float16" for layer in hidden)
    assert all(layer.kernel.dtype == "float32" for layer in hidden)
    output = net.layers[-1]
    assert (output.name, output.compute_dtype) == ("output_softmax", "float32")
    assert hidden[-1].output.dtype == "float16" and net.output.dtype == "float32"

    assert mixed(net)
    result = train_alone(plan, net)
    assert result.diverged_epoch is None
    for name, values in result.history.items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
    assert all(result.history[f"grad_norm/hidden_{i}"][-1] > 0 for i in range(2))
    # The same model in float32, from the same weights and batches, learns the same.
    alone = train_alone(
        plan_job(make_cfg(*MIXED[1:], "activation=[relu,sigmoid]", "tracking.enabled=false"))
    )
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.test["test_loss"] == pytest.approx(alone.test["test_loss"], rel=0.01)
    assert result.test["test_accuracy"] == pytest.approx(alone.test["test_accuracy"], abs=0.02)


def test_mixed_precision_on_the_cpu_runs_with_a_warning_and_is_recorded(make_cfg, store, caplog):
    with caplog.at_level(logging.WARNING, logger="runner"):
        test = run_job(make_cfg(*MIXED))
    assert "train.mixed_precision=true on the CPU: it runs, but float16 speeds up GPUs" in (
        caplog.text
    )
    assert math.isfinite(test["test_loss"]) and 0 <= test["test_accuracy"] <= 1
    row = search(store).iloc[0]
    assert (row["status"], row["params.train.mixed_precision"]) == ("FINISHED", "True")
    # tracking.* does not change what is trained, mixed precision does.
    mixed_fp = plan_job(make_cfg(*MIXED, "tracking.enabled=false")).spec.fingerprint
    single_fp = plan_job(make_cfg(*MIXED[1:], "tracking.enabled=false")).spec.fingerprint
    assert row["tags.fingerprint"] == mixed_fp != single_fp
    client = MlflowClient(store)
    losses = [m.value for m in client.get_metric_history(row["run_id"], "loss")]
    assert len(losses) == 2 and losses[1] < losses[0]
    norms = [m.value for m in client.get_metric_history(row["run_id"], "grad_norm/hidden_0")]
    assert len(norms) == 2 and all(0 < norm < math.inf for norm in norms)


def test_the_probe_scales_the_loss_so_float16_gradients_match_float32_ones():
    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    head = model.OutputHead(10, "softmax", Encoding.onehot)
    sigmoids = ("sigmoid",) * 8
    optimizer = engine.OptimizerKind("adam")
    norms = {}
    for half in (False, True):
        spec = model.ModelSpec(
            units=(32,) * 8, activations=sigmoids, head=head, mixed_precision=half
        )
        net = model.build_model(spec, ds.features, seed=0)
        # A learning rate too small to move the weights: the probe sees the initial model.
        member = engine.Member(net, spec, "categorical_crossentropy", Encoding.onehot, 1e-12, 0)
        (result,) = engine.train([member], ds, engine.Settings(optimizer, 1, 32, 256))
        norms[half] = np.array([result.history[f"grad_norm/hidden_{i}"][0] for i in range(8)])
    # The first layer's gradient (about 1e-5 here) underflows to 0 in float16 unscaled.
    assert norms[True][0] > 0
    np.testing.assert_allclose(norms[True], norms[False], rtol=0.05)


@pytest.mark.parametrize("half", [False, True])
def test_only_a_model_with_float16_layers_counts_as_mixed(half):
    head = model.OutputHead(1, "linear", Encoding.continuous)
    spec = model.ModelSpec(units=(8,), activations=("relu",), head=head, mixed_precision=half)
    assert mixed(model.build_model(spec, 4, seed=0)) is half
