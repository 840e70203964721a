"""A sweep's store, kept by a tracking process of its own.

A sweep whose jobs train in this process (the fused and basic launchers) hands every store
call to a child process (:class:`RemoteTracker`), which imports MLflow, opens the store and
claims the sweep's parent run on one core while this process imports Keras on the other,
makes each run's store calls while the jobs train, and draws the sweep's table at its end:
this process never imports MLflow, whose import and store cost a short sweep as much as its
training. The child holds a real :class:`~runner.tracking.tracker.Tracker` and its
:class:`~runner.tracking.run.Run` objects; this process holds stand-ins
(:class:`RemoteRun`) that send their calls across one pipe, in order, as plain data.

What a job only tells the store (its params, metrics, the end of its run) is sent without
waiting; what it asks (an experiment's id, the sweep's parent, a run's end) waits for the
answer. The child's log lines come back through the same pipe and are logged here, in the
order they were made. It ignores Ctrl-C and SIGTERM, which this process handles, and when
this process is gone (its end of the pipe closed, even by SIGKILL) it ends the runs still
open, and the sweep's parent, as KILLED and writes what it holds before it exits.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from logging.handlers import QueueHandler
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from runner import stop
from runner.config import UserError
from runner.tracking.protocol import FinishedRun, named
from runner.tracking.run import COMPLETED, INTERRUPTED, Recording
from runner.tracking.store import masked, reason
from runner.tracking.tracker import Tracker

log = logging.getLogger(__name__)

# The target of a call to the tracker itself, rather than to one of its runs.
TRACKER = 0
# The environment variable that names the tracking process's two pipes.
CHANNEL = "ACTLAB_TRACKING_PIPES"
# How much lower the tracking process's CPU priority is than its sweep's.
NICE = 10
# What the end of a sweep reports with, loaded ahead in the tracking process.
AHEAD = "runner.compare"


class RemoteError(Exception):
    """A store call that failed in the tracking process, with its error in one line."""


class RemoteTracker:
    """The tracker of the store ``uri`` in a tracking process, started here (see the
    module's description); it offers what :class:`~runner.tracking.tracker.Tracker` does."""

    def __init__(self, uri: str, adopt_foreign_db: bool = False):
        self.uri = uri
        self._process, self._pipe = _early.pop() if _early else start()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._gone: str | None = None
        self._said = False
        # Where the store calls are made once the tracking process was given up (abandon).
        self._here: Host | None = None
        self._adopt_foreign_db = adopt_foreign_db
        self._arrays: dict[int, tuple[Any, int]] = {}
        self._model_client: Any = None
        threading.Thread(target=self._read, name="tracking-replies", daemon=True).start()
        atexit.register(self.close)
        self._send((uri, adopt_foreign_db, logging.getLogger().getEffectiveLevel()))

    # The pipe: what is sent, and what comes back.

    def tell(self, target: int, name: str, *args: Any) -> None:
        """Have the tracking process call ``name`` on ``target`` (:data:`TRACKER` or a run's
        handle) with ``args``, without waiting. Once it has ended, what is told is lost,
        which the first such call logs: training goes on, as it does when a store fails."""
        if self._here is not None:
            self._here.tell(target, name, args)
            return
        try:
            self._send((None, target, name, args))
        except UserError as error:
            if not self._said:
                self._said = True
                log.error("%s", error)

    def ask(self, target: int, name: str, *args: Any) -> Any:
        """Call ``name`` on ``target`` in the tracking process, after everything sent
        before, and return what it returns; its error is raised here, a :class:`UserError`
        as it is and any other as a :class:`RemoteError`."""
        if self._here is not None:
            return self._here.do(target, name, args)
        call = next(self._ids)
        answer: list[Any] = [threading.Event(), None, None]
        self._waiting[call] = answer
        try:
            self._send((call, target, name, args))
            answer[0].wait()
        finally:
            self._waiting.pop(call, None)
        if answer[2] is not None:
            raise answer[2]
        return answer[1]

    def _send(self, message: tuple) -> None:
        if self._gone is not None:
            raise self._ended()
        try:
            with self._send_lock:
                self._pipe.send(message)
        except OSError:
            raise self._ended() from None

    def _ended(self) -> UserError:
        return UserError(
            f"the tracking process of {masked(self.uri)} has ended "
            f"({self._gone or 'its pipe closed'}): what this sweep records from now on is "
            "lost, and its runs still open stay RUNNING until the next start of the runner "
            "marks them KILLED"
        )

    def _read(self) -> None:
        while True:
            try:
                kind, *message = self._pipe.recv()
            except (EOFError, OSError):
                break
            if kind == "log":
                (record,) = message
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
            else:
                call, value, error = message
                answer = self._waiting.get(call)
                if answer is not None:
                    answer[1:] = value, error
                    answer[0].set()
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=1)
        self._gone = f"exit code {self._process.returncode}"
        for answer in list(self._waiting.values()):
            answer[2] = self._ended()
            answer[0].set()

    def close(self) -> None:
        """Have the tracking process write what it holds and end; return once it has."""
        if self._here is not None:
            self._here.close()
            return
        with suppress(OSError), self._send_lock:
            self._pipe.send((None, TRACKER, "close", ()))
        with stop.held():
            self._process.wait()

    # What a tracker offers (runner.tracking.protocol.AnyTracker).

    def experiment(self, name: str) -> str:
        return self.ask(TRACKER, "experiment", name)

    def reap_orphans(self) -> list[str]:
        return self.ask(TRACKER, "reap_orphans")

    def sweep_parent(self, experiment: str, sweep_id: str, name: str, claim: bool = False) -> str:
        return self.ask(TRACKER, "sweep_parent", experiment, sweep_id, name, claim)

    def finished_run(
        self, experiment_id: str, fingerprint: str, with_model: bool = False
    ) -> FinishedRun | None:
        return self.ask(TRACKER, "finished_run", experiment_id, fingerprint, with_model)

    def adopt(self, run_id: str, sweep_id: str, parent_id: str) -> None:
        self.ask(TRACKER, "adopt", run_id, sweep_id, parent_id)

    def log_file(self, run_id: str, path: Path) -> None:
        self.ask(TRACKER, "log_file", run_id, path)

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        self.ask(TRACKER, "end_sweep", sweep_id, outcome)

    def wait(self) -> None:
        self.ask(TRACKER, "wait")

    def call(self, function: str, *args: Any) -> Any:
        """The function ``function`` (``module:name``) called with ``args`` in the tracking
        process, which has MLflow imported and the store open. A signal meanwhile gives the
        process up (:meth:`abandon`): what it was doing (the sweep's table, once every run
        was written) is not waited for."""
        try:
            return self.ask(TRACKER, "call", function, *args)
        except KeyboardInterrupt:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Kill the tracking process, and make the sweep's store calls from now on in this
        process, with MLflow imported here: what ends a sweep that a signal stopped."""
        with stop.held():
            self._process.kill()
            self._process.wait()
            here = Host()
            here.gone = False
            try:
                here.tracker = Tracker(self.uri, self._adopt_foreign_db)
            except Exception as error:
                here.error = error
            self._here = here

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = None,
        deferred: bool = False,
        role: str = "job",
    ) -> RemoteRun:
        handle = next(self._ids)
        opened = (handle, experiment_id, name, tags, parent_id, deferred, role)
        self.tell(TRACKER, "start_run", *opened)
        return RemoteRun(self, handle, experiment_id, name)

    # Started here, ended on every path as a run of this process is (Run.recording).
    open_run = Tracker.open_run

    def shared(self, array: Any) -> int:
        """The handle of ``array`` in the tracking process, sent there the first time: the
        jobs of a sweep log the same dataset's arrays. The array is held here from then on,
        so that its ``id`` names no other array."""
        kept = self._arrays.get(id(array))
        if kept is None:
            kept = (array, next(self._ids))
            self._arrays[id(array)] = kept
            self.tell(TRACKER, "keep_array", kept[1], array)
        return kept[1]

    def model_client(self) -> Any:
        """MLflow's client of the store in this process, for the one thing that cannot be
        sent: a Keras model to log."""
        if self._model_client is None:
            from runner.tracking.store import connect

            self._model_client = connect(self.uri)
        return self._model_client


def start() -> tuple[subprocess.Popen, Channel]:
    """A tracking process, started, and the pipe to it: it imports MLflow until it is told
    which store to open.

    A process of its own, rather than multiprocessing's, which would run this program's
    main module again in it; in a session of its own, so that Ctrl-C at the terminal
    reaches the sweep's process alone, which ends the runs."""
    to_child, here_out = os.pipe()
    here_in, from_child = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", f"from {__name__} import main; main()"],
        env={**os.environ, CHANNEL: f"{to_child},{from_child}"},
        pass_fds=(to_child, from_child),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(to_child)
    os.close(from_child)
    return process, Channel(here_in, here_out)


# A tracking process started with the sweep's process, not taken by a tracker yet.
_early: list[tuple[subprocess.Popen, Channel]] = []


def start_early() -> None:
    """Start the tracking process as a sweep's process starts, before Hydra composes the
    sweep, so that MLflow is imported by the time its callback opens the store. A sweep
    that records nothing, or whose jobs run in other processes, leaves it unused: it then
    ends when this process does, without being waited for."""
    _early.append(start())
    atexit.register(_leave_unused)


def _leave_unused() -> None:
    """Close the pipe to a tracking process no tracker took: it ends on its own."""
    while _early:
        _, pipe = _early.pop()
        pipe.close()


class RemoteRun(Recording):
    """A job's run whose store calls the tracking process makes (see
    :class:`runner.tracking.protocol.AnyRun`)."""

    def __init__(self, tracker: RemoteTracker, handle: int, experiment_id: str, name: str):
        self._tracker = tracker
        self._handle = handle
        self.experiment_id = experiment_id
        self.name = name
        self.outcome = COMPLETED

    @property
    def run_id(self) -> str | None:
        """The run's id once the store has created it."""
        return self._tracker.ask(self._handle, "run_id")

    def log_params(self, params: dict[str, object]) -> None:
        self._tell("log_params", {key: str(value) for key, value in params.items()})

    def set_tags(self, tags: dict[str, object]) -> None:
        self._tell("set_tags", {key: str(value) for key, value in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self._tell("log_metrics", {key: float(value) for key, value in metrics.items()}, step)

    def log_inputs(self, name: str, source: dict[str, str], splits: dict[str, Any]) -> None:
        shared = {
            context: (self._tracker.shared(x), self._tracker.shared(y))
            for context, (x, y) in splits.items()
        }
        self._tell("log_shared_inputs", name, source, shared)

    def log_files(self, files: dict[str, bytes]) -> None:
        self._tell("log_files", files)

    def log_model(self, net: Any, step: int) -> None:
        """Log the Keras model ``net`` from this process, which has it, through MLflow's
        client here (imported for it alone), into the run the tracking process created."""
        from runner.tracking import model

        run_id = self._tracker.ask(self._handle, "created")
        try:
            if run_id is None:
                raise RemoteError("the store did not create the run")
            client = self._tracker.model_client()
            model.log_model(client, self.experiment_id, run_id, net, step)
        except Exception as error:
            self._tell("lose_artifact", model.MODEL, reason(error))

    def end(self, outcome: str, keep: tuple[str, Path] | None = None) -> None:
        self._tell("end", outcome, keep)

    def wait(self) -> None:
        """Return once the run has ended in the store; a signal meanwhile waits, as
        :meth:`runner.tracking.run.Run.wait` says."""
        with stop.held():
            self._tracker.ask(self._handle, "wait")

    def keep_unrecorded(self, uri: str, path: Path) -> str | None:
        return self._tracker.ask(self._handle, "keep_unrecorded", uri, path)

    def _tell(self, name: str, *args: Any) -> None:
        self._tracker.tell(self._handle, name, *args)


# In the tracking process.


class PipeHandler(QueueHandler):
    """Sends each log record, formatted, back to the sweep's process."""

    def __init__(self, send: Callable[[tuple], None]):
        super().__init__(None)
        self._send_record = send

    def enqueue(self, record: logging.LogRecord) -> None:
        self._send_record(("log", record))


class Channel:
    """Both ends of a duplex pipe made of two one-way pipes, one to read and one to write,
    as multiprocessing's connections carry pickled messages."""

    def __init__(self, read_fd: int, write_fd: int):
        self._in = Connection(read_fd, writable=False)
        self._out = Connection(write_fd, readable=False)

    def send(self, message: Any) -> None:
        self._out.send(message)

    def recv(self) -> Any:
        return self._in.recv()

    def close(self) -> None:
        self._in.close()
        self._out.close()


def main() -> None:
    """The tracking process's entry: the pipes its sweep's process named in
    :data:`CHANNEL`."""
    read_fd, write_fd = (int(fd) for fd in os.environ.pop(CHANNEL).split(","))
    serve(Channel(read_fd, write_fd))
    # Everything is written: the interpreter's teardown of MLflow, pandas and matplotlib
    # would only keep the sweep's process waiting.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(pipe: Channel) -> None:
    """The tracking process: open the store the first message names, then make the calls
    that come through ``pipe`` until it closes or is told to."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Where the cores are all busy, training goes first: the sweep waits on this process
    # only at its start, while it imports Keras on one core, and at its end.
    os.nice(NICE)
    # What every store needs, before the sweep's process says which store it is.
    import mlflow.tracking  # noqa: F401

    try:
        uri, adopt_foreign_db, level = pipe.recv()
    except (EOFError, OSError):
        return
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            pipe.send(message)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(PipeHandler(send))
    root.setLevel(level)
    from runner.tracking import tracker

    # The runs are the sweep's jobs: their pid tags name its process, which a user knows.
    tracker.owner_pid = os.getppid()
    host = Host()
    try:
        host.tracker = Tracker(uri, adopt_foreign_db)
    except Exception as error:
        host.error = error
    else:
        # The sweep's end reads, sums up and draws its table here: the modules that does it
        # with (pandas, SciPy, matplotlib) load while the jobs train.
        threading.Thread(target=importlib.import_module, args=(AHEAD,), daemon=True).start()
    try:
        while True:
            try:
                call, target, name, args = pipe.recv()
            except (EOFError, OSError):
                break
            if name == "close":
                host.gone = False
                break
            if call is None:
                host.tell(target, name, args)
                continue
            try:
                reply = ("reply", call, host.do(target, name, args), None)
            except UserError as failure:
                reply = ("reply", call, None, failure)
            except Exception as failure:
                reply = ("reply", call, None, RemoteError(reason(failure)))
            try:
                send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as failure:
                unsent = RemoteError(f"{name}'s answer cannot be sent: {reason(failure)}")
                send(("reply", call, None, unsent))
    finally:
        host.close()


class Host:
    """What the tracking process holds: the tracker, its runs by handle, and the arrays the
    runs' dataset inputs share."""

    def __init__(self):
        self.tracker: Any = None
        self.error: Exception | None = None
        self.runs: dict[int, Any] = {}
        self.ending: set[int] = set()
        self.claimed: list[str] = []
        # Until told to close: the sweep's process is gone, which ends what it claimed.
        self.gone = True
        self.arrays: dict[int, Any] = {}

    def tell(self, target: int, name: str, args: tuple) -> None:
        """:meth:`do`, for a call nobody waits on: its error is logged."""
        try:
            self.do(target, name, args)
        except Exception as error:
            log.warning("recording: %s failed (%s)", name, reason(error))

    def do(self, target: int, name: str, args: tuple) -> Any:
        if self.error is not None:
            raise self.error
        if target != TRACKER:
            if name == "end":
                self.ending.add(target)
            return self.run_call(self.runs[target], name, args)
        if name == "start_run":
            handle, *rest = args
            self.runs[handle] = self.tracker.start_run(*rest)
            return None
        if name == "keep_array":
            handle, array = args
            self.arrays[handle] = array
            return None
        if name == "call":
            function, *rest = args
            return named(function)(*rest)
        if name == "sweep_parent" and args[3]:
            self.claimed.append(args[1])
        elif name == "end_sweep" and args[0] in self.claimed:
            self.claimed.remove(args[0])
        return getattr(self.tracker, name)(*args)

    def run_call(self, run: Any, name: str, args: tuple) -> Any:
        if name == "run_id":
            return run.run_id
        if name == "created":
            return run.created()
        if name == "log_shared_inputs":
            label, source, shared = args
            splits = {c: (self.arrays[x], self.arrays[y]) for c, (x, y) in shared.items()}
            return run.log_inputs(label, source, splits)
        return getattr(run, name)(*args)

    def close(self) -> None:
        """End the runs still open as KILLED, and write everything the writer holds; when
        the sweep's process is gone, its parent runs too."""
        if self.tracker is None:
            return
        for handle, run in self.runs.items():
            if handle not in self.ending:
                run.end(INTERRUPTED)
        self.tracker.wait()
        for sweep_id in self.claimed if self.gone else []:
            try:
                self.tracker.end_left_sweep(sweep_id, INTERRUPTED)
            except Exception as error:
                log.warning("sweep %s: its parent could not be ended (%s)", sweep_id, reason(error))
