"""Ctrl-C and SIGTERM as a KeyboardInterrupt that cannot get lost.

Python raises a signal handler's exception wherever the main thread happens to be; inside
a finalizer (TensorFlow frees tensors all the time) it is printed as "Exception ignored"
and dropped, and training would go on. So the handler also records the signal, and the
training loop raises it again at the next batch it finishes (:func:`raise_if_signalled`).

Before a process has a run to end (while it imports Hydra, MLflow or Keras), a signal
ends it at once with one line instead (:func:`install_at_start`): a KeyboardInterrupt in
the middle of an import ends in a traceback, or in another error that hides it. Work that
a signal must not cut in two, such as MLflow creating a store's tables, holds it back until
it is done (:func:`held`).

A sweep whose launcher runs jobs in processes of their own (joblib's, submitit's, Ray's
workers) is stopped by its own process: it sends each job's worker SIGTERM, or has Ray
cancel the job, which ends the job there as above, and kills a worker only once it has had
:data:`GRACE` seconds to do so (:func:`end_processes`, :data:`stoppers`). A worker then
exits (:func:`leave`), so that its launcher gives it no further job, and leaves the
sweep's parent run and the line about it to the sweep's process.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from runner.compat.multiprocessing import free_semaphores

if TYPE_CHECKING:
    import subprocess

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Seconds a worker has, after SIGTERM, to end its job's run (its metrics written, its status
# set) before it is killed: below the 30 s that Kubernetes and SLURM give the sweep's own
# process before they kill it.
GRACE = 20.0

requested: str | None = None


def _handle(signum: int, frame: object) -> None:
    global requested
    if requested is not None:
        # A stop is under way: the next signal (a second Ctrl-C, or the SIGTERM that the
        # sweep's process sends a worker that the terminal's Ctrl-C reached already) must
        # not cut the ending of the runs short.
        return
    requested = signal.Signals(signum).name
    raise KeyboardInterrupt(requested)


def _exit(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    print(f"interrupted ({name}) before any run was created", file=sys.stderr, flush=True)
    os._exit(130)


_unraisable_before = sys.unraisablehook


def _unraisable(unraisable: Any) -> None:
    # A signal's KeyboardInterrupt raised inside a finalizer: not an error to print with its
    # traceback, as Python does, since :func:`raise_if_signalled` raises it again.
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
    # A job's process may have been started with them blocked (submitit's local jobs are,
    # runner.compat.launchers): one that came meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _leave(signum: int, frame: object) -> None:
    leave()


def install_between_jobs() -> None:
    """In a worker, between two jobs: SIGINT and SIGTERM make it :func:`leave`, as it has
    no run to end."""
    with suppress(ValueError):
        for signum in SIGNALS:
            signal.signal(signum, _leave)


def leave() -> NoReturn:
    """Exit a worker at once with code 130, and quietly: its job's run has ended, and the
    sweep's process reports. Not by SystemExit, which a loky worker would hand back to its
    launcher as the job's result and then take the next job."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    free_semaphores()
    os._exit(130)


def end_processes(processes: Sequence[Any], grace: float = GRACE) -> None:
    """Send SIGTERM to each of the sweep's worker ``processes`` (``subprocess.Popen`` or
    ``multiprocessing`` processes, children of this one) that is still running, and wait
    until they have all exited, for ``grace`` seconds at most."""
    for process in processes:
        if _running(process):
            process.terminate()
    deadline = time.monotonic() + grace
    while any(_running(process) for process in processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(process: Any) -> bool:
    return process.poll() is None if hasattr(process, "poll") else process.is_alive()


def kill(process: subprocess.Popen) -> None:
    """SIGKILL ``process``, a child of this one, and every process below it (found in
    /proc; where there is none, the process alone)."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # The parent's id is the second field after the command, which is in brackets.
            parents[int(entry.parent.name)] = int(entry.read_text().rsplit(")", 1)[1].split()[1])
    doomed, below = [], [process.pid]
    while below:
        pid = below.pop()
        doomed.append(pid)
        below += [child for child, parent in parents.items() if parent == pid]
    for pid in doomed:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


# How this process stops the jobs that it handed to workers, beyond joblib's, which loky
# stops (runner.compat.launchers): each sends them the signal, and waits for them to end their runs
# for GRACE seconds at most.
stoppers: list[Callable[[], None]] = []


def end_workers() -> None:
    """Stop the jobs that this process handed to workers (:data:`stoppers`)."""
    for stopper in stoppers:
        stopper()


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


def raise_if_signalled() -> None:
    """Raise KeyboardInterrupt when a signal came and its first raise was lost: swallowed
    by a finalizer, or replaced by an error raised while it unwound the stack."""
    if requested is not None:
        raise KeyboardInterrupt(requested)
