"""Initial kernels drawn by numpy (runner/initial.py): the distribution of the Keras
initializer the config names, the same values on either backend, and a built model that
names Keras's initializer, so that a saved one loads without the runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from runner import model
from runner.config import Encoding
from runner.initial import Drawn, draw
from tests.conftest import TESTS

DENSE = (300, 200)
CONV = (5, 5, 16, 24)
INITIALIZERS = [
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
    keras.initializers.VarianceScaling(0.5, "fan_avg", "truncated_normal"),
    keras.initializers.RandomNormal(0.5, 0.2),
    keras.initializers.RandomUniform(-0.3, 0.1),
    keras.initializers.TruncatedNormal(1.0, 0.5),
]


def _name(initializer) -> str:
    if isinstance(initializer, str):
        return initializer
    return type(initializer).__name__ + json.dumps(initializer.get_config(), sort_keys=True)


@pytest.mark.parametrize("shape", [DENSE, CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=_name)
def test_numpy_draws_the_distribution_keras_draws(initializer, shape):
    named = keras.initializers.get(initializer)
    named = type(named).from_config({**named.get_config(), "seed": 5})
    ours = Drawn(named, 3).values(shape, "float32")
    theirs = np.asarray(named(shape, dtype="float32"))
    assert ours.shape == shape and ours.dtype == np.float32
    assert not np.array_equal(ours, theirs)  # numpy's numbers, not Keras's
    # About 60,000 values each: the mean, the deviation and the quantiles agree to a few
    # hundredths of the deviation.
    std = float(theirs.std())
    assert ours.std() == pytest.approx(std, rel=0.03)
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.03 * std)
    levels = [0.01, 0.1, 0.5, 0.9, 0.99]
    np.testing.assert_allclose(
        np.quantile(ours, levels), np.quantile(theirs, levels), atol=0.08 * std
    )
    # A bounded distribution's bounds (a uniform's, a truncated normal's cut), reached alike.
    if isinstance(named, keras.initializers.RandomNormal) or (
        getattr(named, "distribution", "") == "untruncated_normal"
    ):
        return
    np.testing.assert_allclose(
        [ours.min(), ours.max()], [theirs.min(), theirs.max()], atol=0.01 * std
    )


@pytest.mark.parametrize("shape", [(40, 90), (90, 40), (3, 3, 4, 20)])
def test_an_orthogonal_kernel_is_orthogonal_times_its_gain(shape):
    kernel = Drawn(keras.initializers.Orthogonal(gain=2.0), 0).values(shape, "float32")
    flat = kernel.reshape(-1, shape[-1])
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-4)


def test_constants_are_exact_and_other_initializers_draw_as_keras_does():
    assert np.array_equal(draw(keras.initializers.Constant(0.25), (2, 3), "float32", 0),
                          np.full((2, 3), 0.25, np.float32))  # fmt: skip
    assert not draw(keras.initializers.get("zeros"), (4,), "float32", 0).any()
    identity = keras.initializers.Identity(gain=3.0)
    assert draw(identity, (4, 4), "float32", 0) is None
    np.testing.assert_array_equal(Drawn(identity, 0).values((4, 4), "float32"), 3 * np.eye(4))


def test_a_seed_gives_the_same_kernel_every_time_and_another_seed_another():
    named = keras.initializers.get("he_normal")
    first = Drawn(named, 7).values(DENSE, "float32")
    np.testing.assert_array_equal(first, Drawn(named, 7).values(DENSE, "float32"))
    assert not np.allclose(first, Drawn(named, 8).values(DENSE, "float32"))


SPEC = model.ModelSpec(
    units=(16, 8),
    activations=("relu", "tanh"),
    head=model.OutputHead(3, "softmax", Encoding.onehot),
    kernel_initializers=("he_normal", "orthogonal", "lecun_uniform"),
)
KERNELS = """
import sys
import numpy as np
from runner import model
from tests.test_initial import SPEC
net = model.build_model(SPEC, 5, seed=11)
np.savez(sys.argv[1], *[np.asarray(v.value) for v in net.trainable_variables])
"""


def test_a_seed_gives_the_same_initial_weights_on_either_backend(tmp_path):
    # The backend this suite does not run on, in a process of its own.
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    env = dict(os.environ, KERAS_BACKEND=other)
    subprocess.run(
        [sys.executable, "-c", KERNELS, str(tmp_path / "other.npz")],
        cwd=TESTS.parent,
        env=env,
        check=True,
    )
    found = np.load(tmp_path / "other.npz")
    net = model.build_model(SPEC, 5, seed=11)
    assert len(found.files) == len(net.trainable_variables)
    for name, variable in zip(found.files, net.trainable_variables, strict=True):
        np.testing.assert_array_equal(found[name], np.asarray(variable.value))


def test_a_built_model_names_keras_initializers_and_rebuilds_from_its_config():
    net = model.build_model(SPEC, 5, seed=11)
    kernels = [layer for layer in net.layers if hasattr(layer, "kernel_initializer")]
    assert [type(layer.kernel_initializer).__name__ for layer in kernels] == [
        "HeNormal",
        "Orthogonal",
        "LecunUniform",
    ]
    # What a saved model holds: Keras's own classes, which load without this package.
    config = json.loads(net.to_json())
    named = [
        layer["config"]["kernel_initializer"]["class_name"]
        for layer in config["config"]["layers"]
        if "kernel_initializer" in layer["config"]
    ]
    assert named == ["HeNormal", "Orthogonal", "LecunUniform"]
    assert all(
        layer["config"]["kernel_initializer"]["module"] == "keras.initializers"
        for layer in config["config"]["layers"]
        if "kernel_initializer" in layer["config"]
    )
    rebuilt = keras.models.model_from_json(net.to_json())
    assert [v.shape for v in rebuilt.trainable_variables] == [
        v.shape for v in net.trainable_variables
    ]
