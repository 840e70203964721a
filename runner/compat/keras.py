"""Keras's internals: saving a model on JAX without importing TensorFlow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from runner.compat import written_for

KERAS = tuple(f"3.{minor}" for minor in range(5, 16))


@contextmanager
def saving_without_tensorflow() -> Iterator[None]:
    """Save a Keras model on JAX without importing TensorFlow.

    Keras's serialisation asks whether TensorFlow can be imported, to recognise its
    ``TensorShape``, ``DType`` and ``TypeSpec`` objects in a model's config, and so imports
    it wherever it is installed: seconds, and a framework that a JAX process otherwise never
    loads. A JAX model's config holds none of them, so for the time of the save Keras's lazy
    handle on TensorFlow says it is not there. On TensorFlow nothing changes. Fallback: the
    save imports TensorFlow, as Keras does."""
    import keras

    if keras.backend.backend() == "tensorflow" or not written_for(
        "keras", KERAS, "saving a model without TensorFlow"
    ):
        yield
        return
    from keras.src.utils import module_utils

    handle = module_utils.tensorflow
    # From the instance: where the attribute is missing, the handle's lookup imports TensorFlow.
    before = vars(handle).get("_available")
    handle._available = False
    try:
        yield
    finally:
        handle._available = before
