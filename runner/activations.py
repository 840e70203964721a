"""What an ``activation`` name can be, and the function or layer it names.

- a Keras activation (``relu``, ``selu``, ``gelu``, ``mish``...): ``keras.activations``;
- ``prelu``: Keras's ``PReLU`` layer, whose negative slopes are learned (one per unit, one
  per channel in a conv block);
- a function of the user's own, ``module:function``: imported as Python imports anything
  (its module on ``sys.path``, ``PYTHONPATH`` included), written with ``keras.ops`` so
  that it runs on either backend, and registered with Keras's serialization so that a
  logged model saves it by name (``keras.saving.register_keras_serializable``; a
  function already registered, by that decorator in its module, keeps its name).

Keras is imported by the functions that need it only, so that a job's spec is resolved
before its backend is.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable

from runner.config import UserError

# Activations that are Keras layers, by name: they hold weights of their own.
LAYERS = {"prelu": "PReLU"}
USER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_user(name: str) -> bool:
    """Whether ``name`` is a function of the user's own, ``module:function``."""
    return USER.fullmatch(name) is not None


def short_name(name: str) -> str:
    """The name a layer carries for the activation: a user function's own name."""
    return name.rsplit(":", 1)[-1]


def user_function(name: str) -> Callable:
    """The user's function ``module:function``, imported and registered with Keras's
    serialization under the package ``module`` unless it is registered already."""
    import keras

    module_name, function_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an import runs the user's code: any error can come out
        raise UserError(
            f"activation={name}: cannot import {module_name} ({type(error).__name__}: "
            f"{error}). Its folder must be on the Python path: run from it, or add it to "
            "PYTHONPATH."
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(
            f"activation={name}: {module_name} has no function {function_name}. Write "
            f"`def {function_name}(x): return ...` with keras.ops in {module.__file__}."
        )
    if keras.saving.get_registered_name(function) == function.__name__:
        keras.saving.register_keras_serializable(package=module_name)(function)
    return function


def function(name: str) -> Callable:
    """The activation function ``name`` names: a Keras activation or the user's."""
    import keras

    return user_function(name) if is_user(name) else keras.activations.get(name)


def check_user(key: str, name: str) -> None:
    """Refuse a user function that does not import, or does not compute with ``keras.ops``
    an output of its input's shape, finite on ordinary inputs."""
    import keras
    import numpy as np

    activation = user_function(name)
    try:
        symbolic = activation(keras.KerasTensor((None, 5)))
        values = keras.ops.convert_to_numpy(activation(keras.ops.linspace(-3.0, 3.0, 5)))
    except Exception as error:
        raise UserError(
            f"{key}={name} cannot be computed by Keras ({type(error).__name__}: {error}). "
            "Write it with keras.ops (keras.ops.exp, keras.ops.tanh...), not numpy, so "
            "that it can be traced and differentiated on either backend."
        ) from None
    if tuple(getattr(symbolic, "shape", ())) != (None, 5) or not np.isfinite(values).all():
        raise UserError(
            f"{key}={name} must return a tensor of its input's shape, finite for finite "
            f"inputs; on keras.ops.linspace(-3, 3, 5) it returned {values!r}."
        )


def source_digest(name: str) -> str:
    """A digest of the module of the user's function ``name``: a compiled program kept for
    it is not reused once that code changes."""
    module = inspect.getmodule(user_function(name))
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:16]
