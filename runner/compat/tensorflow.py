"""TensorFlow's internals: its process-wide registry of gradient functions."""

from __future__ import annotations

from runner.compat import installed, written_for

TENSORFLOW = ("2.16", "2.17", "2.18", "2.19", "2.20", "2.21")


def gradient_registry() -> dict | None:
    """TensorFlow's process-wide registry of gradient functions (a dict by name), which has
    no method to unregister one (see runner/engine/tf_engine.py). Fallback: None, and the
    registry keeps what each job registered, as TensorFlow does."""
    package = "tensorflow-cpu" if installed("tensorflow-cpu") else "tensorflow"
    if not written_for(package, TENSORFLOW, "the gradient-registry cleanup"):
        return None
    from tensorflow.python.framework import ops

    return ops.gradient_registry._registry
