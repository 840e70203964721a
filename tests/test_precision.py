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
from runner import data, engine, job, model
from runner.checks import validate_values
from runner.config import DatasetConfig, Encoding, OptimizerConfig
from tests.conftest import search

pytestmark = pytest.mark.backend

MIXED = ["train.mixed_precision=true", "model.units=[16,8]", "train.epochs=2"]
# Named: the in-process fits below skip job.prepare, where loss=auto is resolved.
LOSS = "loss=categorical_crossentropy"


def test_device_auto_trains_on_a_gpu_when_there_is_one(monkeypatch, backend):
    # The one mock of the suite: a GPU, which this machine cannot have.
    monkeypatch.setattr(backends, "_chosen", {})
    if backend == "jax":
        monkeypatch.setattr(backends, "_jax_gpus", lambda jax: ["cuda:0"])
        assert backends.use("jax", "auto", None) == "gpu"
        return
    import tensorflow as tf

    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    growth, hidden = {}, []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else []
    )
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", growth.__setitem__)
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: hidden.append(args))
    assert backends.use("tensorflow", "auto", None) == "gpu"
    assert growth == {gpu: True}
    assert hidden == []


def test_mixed_precision_builds_float16_hidden_layers_and_a_float32_output(make_cfg):
    cfg = make_cfg(*MIXED, "activation=[relu,sigmoid]")
    validate_values(cfg)
    plan = job.prepare(cfg, None)
    net = job.build(cfg, plan.dataset, plan.head)
    hidden = [layer for layer in net.layers if layer.name.startswith("hidden_")]
    assert [layer.dtype_policy.name for layer in hidden] == ["mixed_float16"] * 2
    assert all(layer.compute_dtype == "float16" for layer in hidden)
    assert all(layer.kernel.dtype == "float32" for layer in hidden)
    output = net.layers[-1]
    assert (output.name, output.compute_dtype) == ("output_softmax", "float32")
    assert hidden[-1].output.dtype == "float16" and net.output.dtype == "float32"

    assert engine.mixed(net)
    result = job.train(cfg, net, plan.dataset, plan.head)
    assert result.diverged_epoch is None
    for name, values in result.history.items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
    assert all(result.history[f"grad_norm/hidden_{i}"][-1] > 0 for i in range(2))
    # The same model in float32, from the same weights and batches, learns the same.
    single = make_cfg(*MIXED[1:], "activation=[relu,sigmoid]", LOSS)
    alone = job.train(single, job.build(single, plan.dataset, plan.head), plan.dataset, plan.head)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.test["test_loss"] == pytest.approx(alone.test["test_loss"], rel=0.01)
    assert result.test["test_accuracy"] == pytest.approx(alone.test["test_accuracy"], abs=0.02)


def test_mixed_precision_on_the_cpu_runs_with_a_warning_and_is_recorded(make_cfg, store, caplog):
    cfg = make_cfg(*MIXED)
    validate_values(cfg)
    with caplog.at_level(logging.WARNING, logger="runner.job"):
        test = job.execute([job.prepare(cfg, None)])[0]
    assert "train.mixed_precision=true on the CPU: it runs, but float16 speeds up GPUs" in (
        caplog.text
    )
    assert math.isfinite(test["test_loss"]) and 0 <= test["test_accuracy"] <= 1
    row = search(store).iloc[0]
    assert (row["status"], row["params.train.mixed_precision"]) == ("FINISHED", "True")
    assert row["tags.fingerprint"] == job.fingerprint(cfg)
    assert job.fingerprint(cfg) != job.fingerprint(make_cfg(*MIXED[1:]))
    client = MlflowClient(store)
    losses = [m.value for m in client.get_metric_history(row["run_id"], "loss")]
    assert len(losses) == 2 and losses[1] < losses[0]
    norms = [m.value for m in client.get_metric_history(row["run_id"], "grad_norm/hidden_0")]
    assert len(norms) == 2 and all(0 < norm < math.inf for norm in norms)


def test_the_probe_scales_the_loss_so_float16_gradients_match_float32_ones():
    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    head = model.OutputHead(10, "softmax", Encoding.onehot)
    sigmoids = ("sigmoid",) * 8
    optimizer = OmegaConf.structured(OptimizerConfig(name="adam"))
    norms = {}
    for mixed in (False, True):
        net = model.build_model(ds.features, [32] * 8, sigmoids, head, mixed_precision=mixed)
        # A learning rate too small to move the weights: the probe sees the initial model.
        member = engine.Member(net, sigmoids, "categorical_crossentropy", Encoding.onehot, 1e-12, 0)
        (result,) = engine.train([member], ds, engine.Settings(optimizer, 1, 32, 256))
        norms[mixed] = np.array([result.history[f"grad_norm/hidden_{i}"][0] for i in range(8)])
    # The first layer's gradient (about 1e-5 here) underflows to 0 in float16 unscaled.
    assert norms[True][0] > 0
    np.testing.assert_allclose(norms[True], norms[False], rtol=0.05)


@pytest.mark.parametrize("mixed", [False, True])
def test_only_a_model_with_float16_layers_counts_as_mixed(mixed):
    head = model.OutputHead(1, "linear", Encoding.continuous)
    net = model.build_model(4, [8], ["relu"], head, mixed_precision=mixed)
    assert engine.mixed(net) is mixed
