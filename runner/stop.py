"""Ctrl-C and SIGTERM as a KeyboardInterrupt that cannot get lost.

Python raises a signal handler's exception wherever the main thread happens to be; inside
a finalizer (TensorFlow frees tensors all the time) it is printed as "Exception ignored"
and dropped, and training would go on. So the handler also records the signal, and the
training loop raises it again at the next batch it finishes (:func:`check`).

Before a process has a run to end (while it imports Hydra, MLflow or Keras), a signal
ends it at once with one line instead (:func:`install_at_start`): a KeyboardInterrupt in
the middle of an import ends in a traceback, or in another error that hides it. Work that
a signal must not cut in two, such as MLflow creating a store's tables, holds it back until
it is done (:func:`held`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

requested: str | None = None


def _handle(signum: int, frame: object) -> None:
    global requested
    requested = signal.Signals(signum).name
    raise KeyboardInterrupt(requested)


def _exit(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    print(f"interrupted ({name}) before any run was created", file=sys.stderr, flush=True)
    os._exit(130)


_unraisable_before = sys.unraisablehook


def _unraisable(unraisable: Any) -> None:
    # A signal's KeyboardInterrupt raised inside a finalizer: not an error to print with its
    # traceback, as Python does, since :func:`check` raises it again.
    if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and requested is not None):
        _unraisable_before(unraisable)


def install() -> None:
    """Handle SIGINT and SIGTERM (what SLURM, Kubernetes and ``kill`` send) alike."""
    global _unraisable_before
    with suppress(ValueError):  # signal handlers can only be set in the main thread
        for signum in SIGNALS:
            signal.signal(signum, _handle)
    if sys.unraisablehook is not _unraisable:
        _unraisable_before = sys.unraisablehook
        sys.unraisablehook = _unraisable


def install_at_start() -> None:
    """Until :func:`install`: SIGINT and SIGTERM exit at once with code 130 and one line,
    for a process that has no run to end yet."""
    with suppress(ValueError):
        for signum in SIGNALS:
            signal.signal(signum, _exit)


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
    """Raise KeyboardInterrupt when a signal came and its first raise was lost: swallowed
    by a finalizer, or replaced by an error raised while it unwound the stack."""
    if requested is not None:
        raise KeyboardInterrupt(requested)
