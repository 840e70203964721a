"""Ctrl-C and SIGTERM as a KeyboardInterrupt that cannot get lost.

Python raises a signal handler's exception wherever the main thread happens to be; inside
a finalizer (TensorFlow frees tensors all the time) it is printed as "Exception ignored"
and dropped, and training would go on. So the handler also records the signal, and the
training loop raises it again at the next batch it finishes (:func:`check`).

Work that a signal must not cut in two, such as MLflow creating a store's tables, holds it
back until it is done (:func:`held`).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress

SIGNALS = (signal.SIGINT, signal.SIGTERM)

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


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs, then deliver the first that came
    to the handler that was in place: for work that a signal would leave half done."""
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    previous = {}
    with suppress(ValueError):  # not the main thread, where no signal is delivered anyway
        for signum in SIGNALS:
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def check() -> None:
    """Raise KeyboardInterrupt when a signal came and its first raise was lost."""
    if requested is not None:
        raise KeyboardInterrupt(requested)
