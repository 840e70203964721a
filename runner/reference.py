"""Reference numpy versions of the activation and loss functions the runner compares.

They restate a tutorial's formulas so that they hold for every finite input: its naive
``1 / (1 + exp(-x))`` and ``exp(x) / sum(exp(x))`` overflow for large ``|x|``, its "categorical
cross-entropy" was binary cross-entropy in log base 2, and its "mse" was the mean absolute error.
Each function follows the semantics of its Keras namesake (``keras.activations.*`` and
``keras.losses.*``), so the tests can check one against the other, and keeps a floating input's
dtype; anything else is computed in float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Keras's ``keras.config.epsilon()``, repeated here so that this module needs numpy only.
EPSILON = 1e-7


def _float(x: ArrayLike) -> NDArray[np.floating]:
    """Return ``x`` as a floating array: a floating input keeps its dtype, so a float32 model's
    values are checked in float32, while integers, booleans and lists of them become float64."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def sigmoid(x: ArrayLike) -> NDArray[np.floating]:
    """The logistic function ``1 / (1 + exp(-x))``, in (0, 1) and rounding to 0 or 1 at the
    extremes. Both branches exponentiate ``-|x|``, which is at most 0, so nothing overflows: for
    ``x >= 0`` it is ``1 / (1 + e)`` and for ``x < 0`` the equal ``e / (1 + e)``, with
    ``e = exp(-|x|)``."""
    x = _float(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x: ArrayLike) -> NDArray[np.floating]:
    """The derivative of :func:`sigmoid`, ``sigmoid(x) * (1 - sigmoid(x))``, which peaks at 0.25
    for ``x = 0`` and vanishes for large ``|x|``: the saturation that slows training of deep
    sigmoid networks."""
    s = sigmoid(x)
    return s * (1 - s)


def tanh(x: ArrayLike) -> NDArray[np.floating]:
    """The hyperbolic tangent, in (-1, 1); numpy's ``np.tanh`` already saturates instead of
    overflowing, unlike the textbook ``(exp(x) - exp(-x)) / (exp(x) + exp(-x))``."""
    return np.tanh(_float(x))


def tanh_grad(x: ArrayLike) -> NDArray[np.floating]:
    """The derivative of :func:`tanh`, ``1 - tanh(x) ** 2``: 1 at ``x = 0`` and vanishing for
    large ``|x|`` like the sigmoid's, but four times as steep at the origin."""
    t = tanh(x)
    return 1 - t * t


def relu(x: ArrayLike) -> NDArray[np.floating]:
    """The rectified linear unit ``max(x, 0)``."""
    return np.maximum(_float(x), 0)


def relu_grad(x: ArrayLike) -> NDArray[np.floating]:
    """The derivative of :func:`relu`: 1 for ``x > 0`` and 0 otherwise. It is undefined at
    ``x = 0``; 0 there is the value TensorFlow's gradient uses."""
    x = _float(x)
    return (x > 0).astype(x.dtype)


def linear(x: ArrayLike) -> NDArray[np.floating]:
    """The identity, Keras's ``"linear"`` activation: a layer with it stays affine."""
    return _float(x)


def linear_grad(x: ArrayLike) -> NDArray[np.floating]:
    """The derivative of :func:`linear`: 1 everywhere, in ``x``'s shape."""
    return np.ones_like(_float(x))


def softmax(x: ArrayLike, axis: int = -1) -> NDArray[np.floating]:
    """Exponentials normalised to sum to 1 along ``axis``, turning scores into a probability
    distribution. The maximum along ``axis`` is subtracted first, which leaves the result
    unchanged (the factor ``exp(-max)`` cancels) but makes every exponent at most 0, so the
    largest term is exactly 1 and the sum neither overflows nor is 0."""
    x = _float(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_jacobian(x: ArrayLike) -> NDArray[np.floating]:
    """The Jacobian of :func:`softmax` at a 1-D vector ``x``: ``J[i, j] = d softmax(x)[i] / d
    x[j] = s[i] * (delta[i, j] - s[j])``, that is ``diag(s) - outer(s, s)``. Unlike the
    element-wise activations softmax couples its inputs, so its derivative is a matrix, not an
    array in ``x``'s shape; each row sums to 0 because the outputs always sum to 1."""
    x = _float(x)
    if x.ndim != 1:
        raise ValueError(f"softmax_jacobian takes a 1-D vector, got shape {x.shape}")
    s = softmax(x)
    return np.diag(s) - np.outer(s, s)


def _pair(
    y_true: ArrayLike, y_pred: ArrayLike
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Both arguments of a loss as arrays of ``y_pred``'s floating dtype, as Keras casts them.
    Their shapes must be equal: broadcasting labels of shape ``(n,)`` against predictions of
    shape ``(n, 1)`` would silently score every sample against every label."""
    y_pred = _float(y_pred)
    y_true = np.asarray(y_true, dtype=y_pred.dtype)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    return y_true, y_pred


def mse(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.floating]:
    """The mean squared error over the last axis, one value per sample, as
    ``keras.losses.mean_squared_error``: the training loss is the mean of these. Inputs of shape
    ``(n,)`` are one sample of ``n`` outputs and give a single value."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.floating]:
    """The mean absolute error over the last axis, one value per sample, as
    ``keras.losses.mean_absolute_error``; the tutorial called this "mse"."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def categorical_crossentropy(y_true: ArrayLike, p: ArrayLike) -> NDArray[np.floating]:
    """The cross-entropy ``-sum(y_true * ln(p))`` over the last (class) axis, one value per
    sample, as ``keras.losses.categorical_crossentropy``: ``y_true`` is one-hot (or a target
    distribution) and ``p`` a predicted distribution such as a softmax output. ``p`` is clipped
    to ``[EPSILON, 1 - EPSILON]`` as Keras does, so a zero probability on the true class costs
    ``-ln(1e-7) ~ 16.1`` rather than infinity. Keras also divides ``p`` by its sum first; this
    does not, as ``p`` is meant to be a distribution already, so only for a ``p`` that does not
    sum to 1 do the two differ."""
    y_true, p = _pair(y_true, p)
    return -np.sum(y_true * np.log(np.clip(p, EPSILON, 1 - EPSILON)), axis=-1)


def binary_crossentropy(y_true: ArrayLike, p: ArrayLike) -> NDArray[np.floating]:
    """The binary cross-entropy ``-(y ln(p) + (1 - y) ln(1 - p))`` of each output, averaged over
    the last axis, one value per sample, as ``keras.losses.binary_crossentropy``: ``p`` is the
    predicted probability that each label ``y`` is 1. Like Keras this clips ``p`` to
    ``[EPSILON, 1 - EPSILON]``, so it is finite at 0 and 1, and reduces over the last axis, so
    labels of shape ``(n,)`` count as one sample of ``n`` outputs and give a single value, while
    ``(n, 1)`` gives ``n``. ``ln(1 - p)`` is taken as ``log1p(-p)``, exact for small ``p``."""
    y_true, p = _pair(y_true, p)
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return -np.mean(y_true * np.log(p) + (1 - y_true) * np.log1p(-p), axis=-1)
