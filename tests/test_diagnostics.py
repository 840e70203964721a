"""The per-layer diagnostics on real, tiny training runs: present for every layer and
epoch, and telling dead relu units and vanishing sigmoid gradients apart."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner import data, engine, model
from runner.config import DatasetConfig, Encoding
from tests.conftest import run_job, search

pytestmark = pytest.mark.backend


@pytest.fixture(scope="module")
def digits():
    ds = data.load(OmegaConf.structured(DatasetConfig(name="digits")))
    return ds, data.encoded_splits(ds, Encoding.onehot)


def fit(digits, activations, epochs=2, dead_bias=False, biases=None, rate=0.001):
    """Train a net of 32-unit hidden layers; ``dead_bias`` sets every hidden bias to -100,
    ``biases`` sets every hidden kernel to 0 and the biases to these 32 values, so that
    each unit outputs its activation of its bias whatever the input."""
    activations = tuple(activations)
    ds, _ = digits
    head = model.OutputHead(10, "softmax", Encoding.onehot)
    spec = model.ModelSpec(units=(32,) * len(activations), activations=activations, head=head)
    net = model.build_model(spec, ds.features, seed=0)
    for layer in net.layers:
        if layer.name.startswith("hidden_") and dead_bias:
            layer.bias.assign(np.full(layer.bias.shape, -100.0, dtype="float32"))
        if layer.name.startswith("hidden_") and biases is not None:
            layer.kernel.assign(np.zeros(layer.kernel.shape, dtype="float32"))
            layer.bias.assign(np.asarray(biases, dtype="float32"))
    optimizer = engine.OptimizerKind("adam")
    member = engine.Member(net, spec, "categorical_crossentropy", Encoding.onehot, rate, 0)
    settings = engine.Settings(optimizer, epochs, 32, 256, steps_per_execution=8)
    (result,) = engine.train([member], ds, settings)
    return result


def test_every_hidden_layer_gets_its_diagnostics_every_epoch(digits):
    history = fit(digits, ["relu", "sigmoid", "tanh", "elu"], epochs=3).history
    for i in range(4):
        assert len(history[f"grad_norm/hidden_{i}"]) == 3
        assert len(history[f"median_activation/hidden_{i}"]) == 3
        assert all(value > 0 for value in history[f"grad_norm/hidden_{i}"])
    assert len(history["dead_fraction/hidden_0"]) == 3
    assert len(history["saturated_fraction/hidden_1"]) == 3
    assert len(history["saturated_fraction/hidden_2"]) == 3
    assert len(history["dead_fraction/hidden_3"]) == 3
    assert "saturated_fraction/hidden_0" not in history and "dead_fraction/hidden_1" not in history


def test_relu_units_forced_dead_report_a_dead_fraction_of_one(digits):
    history = fit(digits, ["relu", "relu"], dead_bias=True).history
    assert history["dead_fraction/hidden_0"] == [1.0, 1.0]
    assert history["dead_fraction/hidden_1"] == [1.0, 1.0]
    assert history["grad_norm/hidden_0"] == [0.0, 0.0]


def test_the_median_activation_is_the_median_of_the_units_mean_outputs(digits):
    biases = np.linspace(-2.0, 4.0, 32)
    history = fit(digits, ["relu", "tanh"], epochs=2, biases=biases, rate=0.0).history
    # Every unit of layer 0 outputs relu(bias) for every sample; layer 1's inputs are then
    # the same for every sample too, but its kernel is 0: it outputs tanh(bias).
    np.testing.assert_allclose(
        history["median_activation/hidden_0"], [np.median(np.maximum(biases, 0))] * 2, rtol=1e-6
    )
    np.testing.assert_allclose(
        history["median_activation/hidden_1"], [np.median(np.tanh(biases))] * 2, atol=1e-6
    )


def test_a_deep_sigmoid_net_has_a_smaller_first_layer_gradient_than_relu(digits):
    sigmoid = fit(digits, ["sigmoid"] * 6, epochs=1).history["grad_norm/hidden_0"][0]
    relu = fit(digits, ["relu"] * 6, epochs=1).history["grad_norm/hidden_0"][0]
    assert sigmoid < relu / 10


def test_a_run_records_diagnostics_and_figures_or_not_when_disabled(make_cfg, store):
    for enabled in ("true", "false"):
        cfg = make_cfg(
            "activation=[relu,tanh]",
            "model.units=[8,8]",
            "train.epochs=2",
            f"diagnostics.enabled={enabled}",
        )
        run_job(cfg)
    client = MlflowClient(store)
    runs = search(store).set_index("params.diagnostics.enabled")
    on, off = runs.loc["True", "run_id"], runs.loc["False", "run_id"]
    for name in (
        "grad_norm/hidden_0",
        "grad_norm/hidden_1",
        "median_activation/hidden_1",
        "dead_fraction/hidden_0",
        "saturated_fraction/hidden_1",
    ):
        assert [m.step for m in client.get_metric_history(on, name)] == [0, 1], name
    assert not [k for k in client.get_run(off).data.metrics if "/" in k]
    for run_id in (on, off):
        assert "training_curves.png" in {a.path for a in client.list_artifacts(run_id)}
