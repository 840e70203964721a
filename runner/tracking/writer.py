"""Writing runs to their store: MLflow's ``log_batch`` packed within its limits, and the
process's one writer thread, which makes every store call of every run, in the order the
runs asked, so that training never waits for the store."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from runner.tracking.run import Run

log = logging.getLogger(__name__)

# MLflow's limits on one log_batch call: 1000 metrics, 100 params, 100 tags, 1000 in all.
METRICS_PER_CALL = 1000
PARAMS_PER_CALL = 100
TAGS_PER_CALL = 100
ENTITIES_PER_CALL = 1000


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """Write ``params``, ``tags`` and ``metrics`` to the run in as few ``log_batch`` calls as
    MLflow's limits allow, each call as full as they let it be; none for nothing."""
    params, tags, metrics = list(params), list(tags), list(metrics)
    while params or tags or metrics:
        now_params, now_tags = params[:PARAMS_PER_CALL], tags[:TAGS_PER_CALL]
        room = min(METRICS_PER_CALL, ENTITIES_PER_CALL - len(now_params) - len(now_tags))
        now_metrics = metrics[:room]
        client.log_batch(run_id, metrics=now_metrics, params=now_params, tags=now_tags)
        params, tags = params[len(now_params) :], tags[len(now_tags) :]
        metrics = metrics[len(now_metrics) :]


class Writer:
    """The process's one thread that does every run's store calls in the order they were
    asked for (:meth:`do`), and writes what a run has logged (:meth:`due`) once the run's
    ``flush_every`` seconds have passed since the first of it, or with its last values when
    it ends (:meth:`end`): a fused group's hundreds of runs each take one batch, not one an
    epoch. One thread for
    all runs: a thread each took more connections than the SQLite store's pool holds.

    :meth:`wait` returns once everything asked before is done; the process waits for it at
    exit too, so that no run's record is left behind."""

    _instance: Writer | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Writer:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
                atexit.register(cls._instance.wait)
            return cls._instance

    def __init__(self):
        self._queue: queue.SimpleQueue[tuple[str, Run | None, object]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="run-writer", daemon=True)
        self._thread.start()

    def do(self, run: Run, work: Callable[[], object]) -> None:
        """Call ``work``, a store call of ``run``'s, after everything asked before it."""
        self._queue.put(("do", run, work))

    def end(self, run: Run, work: Callable[[], object]) -> None:
        """Call ``work``, which ends ``run`` and writes what it logged with its last values,
        after everything asked before it."""
        self._queue.put(("end", run, work))

    def due(self, run: Run) -> None:
        """``run`` has logged values to write, within its ``flush_every`` seconds."""
        self._queue.put(("due", run, None))

    def wait(self) -> None:
        """Return once everything asked before is done."""
        if threading.current_thread() is self._thread:
            return
        done = threading.Event()
        self._queue.put(("wait", None, done))
        done.wait()

    def _drain(self) -> None:
        pending: dict[Run, float] = {}
        while True:
            timeout = max(0.0, min(pending.values()) - time.monotonic()) if pending else None
            try:
                kind, run, payload = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind = None
            if kind == "due":
                pending.setdefault(run, time.monotonic() + run.flush_every)
            elif kind == "do":
                # What the run logged before goes first.
                if pending.pop(run, None) is not None:
                    self._call(run.flush, run)
                self._call(payload, run)
            elif kind == "end":
                pending.pop(run, None)
                self._call(payload, run)
            elif kind == "wait":
                payload.set()
            now = time.monotonic()
            for waiting, when in list(pending.items()):
                if when <= now:
                    del pending[waiting]
                    self._call(waiting.flush, waiting)

    def _call(self, work: Callable[[], object], run: Run) -> None:
        try:
            work()
        except Exception:
            # Whatever went wrong, the thread must live on: runs wait on it to end.
            log.exception("recording run %s failed", run.name)
