"""Kernels' initial values drawn by numpy from the distribution of the Keras initializer
named in the config, seeded with the kernel's own seed (:class:`Drawn`).

Why not Keras's own draw: on JAX each of Keras's random draws is a small program that XLA
compiles, one per kernel shape, and on a cold cache those compiles cost more than the
rest of a small sweep's set-up (bench/README.md, "Initial weights drawn by numpy, and the
first store from a dump"). numpy draws the same distribution without compiling anything,
and the same numbers on either backend: the same seed gives a model the same initial
weights on JAX and on TensorFlow.

The distributions are Keras's, read from the Keras initializer itself (its scale, mode
and distribution, its mean and deviation, its bounds, its gain): the variance-scaling
family (Glorot, He, LeCun and ``VarianceScaling``), ``RandomNormal``, ``RandomUniform``,
``TruncatedNormal``, ``Orthogonal`` and the constants. Any other initializer (``Identity``,
one a user registered) draws as Keras does.
"""

from __future__ import annotations

import math

import keras
import numpy as np

# Keras's truncated normals are cut at two standard deviations; a variance-scaling one
# divides its deviation by this, the deviation of a unit normal cut there, so that the
# values keep the variance asked for.
TRUNCATED_AT = 2.0
TRUNCATED_STD = 0.87962566103423978


class Drawn(keras.initializers.Initializer):
    """The Keras initializer ``named`` (seeded or not), its values drawn by numpy from
    ``seed`` (:func:`draw`), or by ``named`` itself where :func:`draw` does not know it.

    A layer built with it keeps it only while it builds: :func:`runner.model.build_model`
    gives the layer back ``named``, so that a saved model names Keras's initializer and
    loads without this package."""

    def __init__(self, named: keras.initializers.Initializer, seed: int):
        self.named = named
        self.seed = seed

    def __call__(self, shape, dtype=None):
        values = draw(self.named, tuple(shape), dtype or keras.config.floatx(), self.seed)
        if values is None:
            return self.named(shape, dtype=dtype)
        if keras.backend.backend() == "jax":
            import jax

            # Already on the device: Keras would otherwise copy the array there through a
            # program compiled for its shape.
            return jax.device_put(values)
        return values

    def values(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """What a variable of ``shape`` and ``dtype`` starts from, in numpy."""
        values = draw(self.named, shape, dtype, self.seed)
        return np.asarray(self.named(shape, dtype=dtype)) if values is None else values


def draw(
    initializer: keras.initializers.Initializer, shape: tuple[int, ...], dtype: str, seed: int
) -> np.ndarray | None:
    """Values of ``shape`` and ``dtype`` from the distribution ``initializer`` draws from,
    drawn by numpy from ``seed``; None where that distribution is not one this module
    knows, or ``dtype`` not one numpy has."""
    try:
        kind = np.dtype(dtype)
    except TypeError:
        return None
    rng = np.random.default_rng(seed)
    init = keras.initializers
    if isinstance(initializer, init.VarianceScaling):
        values = _variance_scaling(initializer, shape, rng)
    elif isinstance(initializer, init.RandomNormal):
        values = rng.normal(initializer.mean, initializer.stddev, shape)
    elif isinstance(initializer, init.RandomUniform):
        values = rng.uniform(initializer.minval, initializer.maxval, shape)
    elif isinstance(initializer, init.TruncatedNormal):
        values = initializer.mean + initializer.stddev * _truncated(rng, shape)
    elif isinstance(initializer, init.Orthogonal) and len(shape) >= 2:
        values = initializer.gain * _orthogonal(rng, shape)
    elif isinstance(initializer, init.Zeros):
        values = np.zeros(shape)
    elif isinstance(initializer, init.Ones):
        values = np.ones(shape)
    elif isinstance(initializer, init.Constant):
        values = np.full(shape, initializer.value)
    else:
        return None
    return np.asarray(values, dtype=kind)


def _fans(shape: tuple[int, ...], input_axes=None, output_axes=None) -> tuple[int, int]:
    """The units into and out of a kernel of ``shape``, as Keras counts them: a Dense
    kernel's rows and columns, a conv kernel's channels times its window; or the
    products of the axes given."""
    if input_axes is not None and output_axes is not None:
        return (
            math.prod(shape[axis] for axis in input_axes),
            math.prod(shape[axis] for axis in output_axes),
        )
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    window = math.prod(shape[:-2])
    return shape[-2] * window, shape[-1] * window


def _variance_scaling(
    initializer: keras.initializers.VarianceScaling, shape: tuple[int, ...], rng
) -> np.ndarray:
    """Keras's variance scaling: ``scale`` over the fans its mode counts, as the
    variance of a truncated normal, a normal, or a uniform."""
    fan_in, fan_out = _fans(
        shape, getattr(initializer, "input_axes", None), getattr(initializer, "output_axes", None)
    )
    count = {"fan_in": fan_in, "fan_out": fan_out}.get(initializer.mode, (fan_in + fan_out) / 2)
    scale = initializer.scale / max(1.0, count)
    if initializer.distribution == "uniform":
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    if initializer.distribution == "untruncated_normal":
        return math.sqrt(scale) * rng.standard_normal(shape)
    return math.sqrt(scale) / TRUNCATED_STD * _truncated(rng, shape)


def _truncated(rng, shape: tuple[int, ...]) -> np.ndarray:
    """Unit normal values cut at :data:`TRUNCATED_AT`: each value outside drawn again."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > TRUNCATED_AT
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > TRUNCATED_AT
    return values


def _orthogonal(rng, shape: tuple[int, ...]) -> np.ndarray:
    """Keras's orthogonal kernel: the Q of a normal matrix's QR, its signs made uniform,
    over the kernel flattened to (everything but the last axis, the last axis)."""
    rows, columns = math.prod(shape[:-1]), shape[-1]
    q, r = np.linalg.qr(rng.standard_normal((max(rows, columns), min(rows, columns))))
    q = q * np.sign(np.diag(r))
    if rows < columns:
        q = q.T
    return q.reshape(shape)
