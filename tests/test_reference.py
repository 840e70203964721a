"""The numpy reference functions: equal to Keras's, derivatives equal to finite differences,
and stable (finite, warning-free, dtype-keeping) over the whole range a float32 model sees."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from runner import reference as ref  # noqa: E402
from runner.reference_plot import main as plot_main  # noqa: E402

RNG = np.random.default_rng(0)

ACTIVATIONS = {
    "sigmoid": (ref.sigmoid, ref.sigmoid_grad, keras.activations.sigmoid),
    "tanh": (ref.tanh, ref.tanh_grad, keras.activations.tanh),
    "relu": (ref.relu, ref.relu_grad, keras.activations.relu),
    "linear": (ref.linear, ref.linear_grad, keras.activations.linear),
}
LOSSES = {
    "mse": (ref.mse, keras.losses.mean_squared_error),
    "mae": (ref.mae, keras.losses.mean_absolute_error),
    "categorical_crossentropy": (
        ref.categorical_crossentropy,
        keras.losses.categorical_crossentropy,
    ),
    "binary_crossentropy": (ref.binary_crossentropy, keras.losses.binary_crossentropy),
}
ELEMENTWISE = [f for f, _, _ in ACTIVATIONS.values()] + [g for _, g, _ in ACTIVATIONS.values()]


@contextmanager
def strict() -> Iterator[None]:
    """Turn every numpy floating-point event and every warning into an error, except underflow:
    values such as sigmoid(-1e4) = exp(-1e4) lie below the smallest subnormal, and rounding them
    to 0 is the correct result, not a loss of accuracy."""
    with np.errstate(all="raise", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def keras_np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def inputs(shape: tuple[int, ...]) -> np.ndarray:
    """float32 scores: mostly moderate, plus the extremes where naive formulas overflow."""
    x = RNG.normal(scale=5, size=shape).astype(np.float32)
    x.flat[:6] = [0, -80, 80, -1e4, 1e4, 1e-3]
    return x


def batch(name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 (y_true, y_pred) of ``shape`` that fit the loss ``name``."""
    if name == "categorical_crossentropy":
        y_true = np.eye(shape[-1], dtype=np.float32)[RNG.integers(shape[-1], size=shape[:-1])]
        return y_true, ref.softmax(RNG.normal(scale=3, size=shape).astype(np.float32))
    if name == "binary_crossentropy":
        y_pred = RNG.uniform(size=shape).astype(np.float32)
        # Exact 0 and 1 exercise the clipping, and so its bounds in float32.
        y_pred.flat[:2] = [0, 1]
        return RNG.integers(2, size=shape).astype(np.float32), y_pred
    return (RNG.normal(size=shape).astype(np.float32), RNG.normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_equal_keras_in_float32(name):
    f, _, keras_f = ACTIVATIONS[name]
    x = inputs((64, 10))
    got = f(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, keras_np(keras_f(x)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_equals_keras_in_float32(axis):
    x = inputs((64, 10))
    got = ref.softmax(x, axis=axis)
    assert got.dtype == np.float32
    want = keras_np(keras.activations.softmax(x, axis=axis))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# (n, k): n samples of k outputs; (n, 1): one output each; (n,): a single sample of n outputs,
# which Keras reduces to one value because it averages over the last axis, whatever it means.
# Categorical cross-entropy over one class is no classification (Keras warns), so it is left out.
SHAPES = {"n-k": (64, 10), "n-1": (64, 1), "n": (64,)}
LOSS_CASES = [
    pytest.param(name, shape, id=f"{name}-{label}")
    for name in LOSSES
    for label, shape in SHAPES.items()
    if not (name == "categorical_crossentropy" and shape[-1] == 1)
]


@pytest.mark.parametrize("name,shape", LOSS_CASES)
def test_losses_equal_keras_per_sample_in_float32(name, shape):
    f, keras_f = LOSSES[name]
    y_true, y_pred = batch(name, shape)
    got = f(y_true, y_pred)
    want = keras_np(keras_f(y_true, y_pred))
    assert got.shape == want.shape == shape[:-1]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cross_entropies_use_the_natural_log_and_keras_epsilon():
    # A certain wrong prediction costs -ln(eps); a certain right one costs -ln(1 - eps) ~ eps.
    assert ref.binary_crossentropy([1.0], [0.0]) == pytest.approx(-np.log(1e-7))
    assert ref.binary_crossentropy([0.0], [0.0]) == pytest.approx(1e-7, rel=1e-6)
    assert ref.categorical_crossentropy([0.0, 1.0], [1.0, 0.0]) == pytest.approx(-np.log(1e-7))
    assert ref.categorical_crossentropy([0.25, 0.75], [0.5, 0.5]) == pytest.approx(np.log(2))


def test_losses_refuse_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match="shape"):
        ref.mse(np.zeros(4), np.zeros((4, 1)))


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivatives_equal_central_differences(name):
    f, grad, _ = ACTIVATIONS[name]
    x = RNG.uniform(-8, 8, size=200)
    x = x[np.abs(x) > 1e-3]  # relu has no derivative at 0
    np.testing.assert_allclose(grad(x), central_difference(f, x), rtol=1e-6, atol=1e-9)


def test_softmax_jacobian_equals_central_differences():
    x = RNG.normal(scale=3, size=5)
    h = 1e-6
    # Column j is the change of every output when input j moves.
    numeric = np.column_stack(
        [(ref.softmax(x + h * e) - ref.softmax(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    )
    jacobian = ref.softmax_jacobian(x)
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jacobian.sum(axis=1), 0, atol=1e-15)


def test_softmax_jacobian_takes_only_vectors():
    with pytest.raises(ValueError, match="1-D"):
        ref.softmax_jacobian(np.zeros((2, 3)))


def test_softmax_of_the_tutorial_example():
    np.testing.assert_allclose(
        ref.softmax([1, 2, 3, 4]), [0.0320586, 0.08714432, 0.23688282, 0.64391426], rtol=1e-6
    )


def wide(dtype, max_dims: int = 2) -> st.SearchStrategy[np.ndarray]:
    """Arrays of 1 to ``max_dims`` dimensions with elements anywhere in [-1e4, 1e4]."""
    return hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=max_dims, max_side=8), elements=anywhere(dtype)
    )


def anywhere(dtype) -> st.SearchStrategy[float]:
    return st.floats(-1e4, 1e4, width=np.finfo(dtype).bits)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_elementwise_functions_are_finite_and_keep_dtype_over_wide_inputs(dtype, data):
    x = data.draw(wide(dtype))
    for f in ELEMENTWISE:
        with strict():
            y = f(x)
        assert y.dtype == dtype and y.shape == x.shape, f.__name__
        assert np.isfinite(y).all(), f.__name__
    s = ref.sigmoid(x)
    assert ((s >= 0) & (s <= 1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_softmax_is_a_distribution_over_wide_inputs(dtype, data):
    x = data.draw(wide(dtype))
    with strict():
        s = ref.softmax(x)
    assert s.dtype == dtype
    assert np.isfinite(s).all() and (s >= 0).all()
    np.testing.assert_allclose(s.sum(axis=-1), 1, rtol=0, atol=8 * np.finfo(dtype).eps)


@settings(max_examples=100, deadline=None)
@given(x=wide(np.float64), c=st.floats(-1e3, 1e3))
def test_softmax_is_unchanged_by_adding_a_constant(x, c):
    # float64 only: in float32, x + c itself rounds by up to 5e-4 near 1e4, which moves softmax.
    with strict():
        shifted = ref.softmax(x + c)
    np.testing.assert_allclose(shifted, ref.softmax(x), rtol=1e-9, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(x=wide(np.float64, max_dims=1))
def test_softmax_jacobian_is_finite_over_wide_inputs(x):
    with strict():
        assert np.isfinite(ref.softmax_jacobian(x)).all()


def probabilities(dtype) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Equal-shaped (labels in {0, 1}, probabilities in [0, 1]) with the bounds 0 and 1 common."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=2, max_side=8)
    p = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1))
    return shapes.flatmap(
        lambda shape: st.tuples(
            hnp.arrays(dtype, shape, elements=st.sampled_from([0.0, 1.0])),
            hnp.arrays(dtype, shape, elements=p),
        )
    )


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_cross_entropies_are_finite_at_probabilities_0_and_1(dtype, data):
    y_true, p = data.draw(probabilities(dtype))
    for f in (ref.binary_crossentropy, ref.categorical_crossentropy):
        with strict():
            loss = f(y_true, p)
        assert loss.dtype == dtype, f.__name__
        assert np.isfinite(loss).all() and (loss >= 0).all(), f.__name__


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_regression_losses_are_finite_over_wide_inputs(dtype, data):
    y_true = data.draw(wide(dtype))
    y_pred = data.draw(hnp.arrays(dtype, y_true.shape, elements=anywhere(dtype)))
    for f in (ref.mse, ref.mae):
        with strict():
            loss = f(y_true, y_pred)
        assert loss.dtype == dtype and np.isfinite(loss).all(), f.__name__


def test_plot_writes_a_png(tmp_path: Path, capsys):
    path = plot_main(tmp_path / "a.png")
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == str(path)
