"""Ctrl-C and SIGTERM as a KeyboardInterrupt that cannot get lost.

Python raises a signal handler's exception wherever the main thread happens to be; inside
a finalizer (TensorFlow frees tensors all the time) it is printed as "Exception ignored"
and dropped, and training would go on. So the handler also records the signal, and the
training loop raises it again at the next batch it finishes (:func:`check`).
"""

from __future__ import annotations

import signal
from contextlib import suppress

requested: str | None = None


def _handle(signum: int, frame: object) -> None:
    global requested
    requested = signal.Signals(signum).name
    raise KeyboardInterrupt(requested)


def install() -> None:
    """Handle SIGINT and SIGTERM (what SLURM, Kubernetes and ``kill`` send) alike."""
    with suppress(ValueError):  # signal handlers can only be set in the main thread
        signal.signal(signal.SIGINT, _handle)
        signal.signal(signal.SIGTERM, _handle)


def check() -> None:
    """Raise KeyboardInterrupt when a signal came and its first raise was lost."""
    if requested is not None:
        raise KeyboardInterrupt(requested)
