"""Activations of a user's own, as the tests name them: ``activation=MODULE:FUNCTION``.

Importable as ``tests.activations_for_tests`` from the project's root, and as
``activations_for_tests`` from a runner subprocess whose PYTHONPATH holds this folder."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="actlab_tests")
def swish_beta(x):
    """Swish with beta = 1.5 (Ramachandran et al. 2017): registered by its decorator, so
    that importing this module is all a process needs to load a model saved with it."""
    return x * keras.ops.sigmoid(1.5 * x)


def penalized_tanh(x):
    """tanh with its negative side scaled by 0.25 (Xu et al. 2016); not registered here:
    the runner registers it."""
    return keras.ops.where(x > 0, keras.ops.tanh(x), 0.25 * keras.ops.tanh(x))


def numpy_relu(x):
    """Written with numpy: it cannot be traced."""
    return np.maximum(x, 0)


def flattening(x):
    """Returns one value per sample: not an activation's shape."""
    return keras.ops.sum(x, axis=-1)
