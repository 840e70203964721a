"""Writing values to a run: MLflow's ``log_batch`` within its limits per call, and the
process's one background thread that writes the runs' metrics as they are logged."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from runner.tracking.run import Run

log = logging.getLogger(__name__)

# MLflow's log_batch takes at most 1000 metrics, and 100 params or 100 tags, a call.
METRICS_PER_CALL = 1000
PARAMS_PER_CALL = 100
TAGS_PER_CALL = 100
# How long the metrics writer waits for more epochs before it writes: a store call costs
# far more than the values in it, and a fused group logs each of its runs every epoch.
WRITE_EVERY = 1.0


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    """Write ``params``, ``tags`` and ``metrics`` to the run, in as many ``log_batch`` calls
    as MLflow's limits per call need; none for an empty list."""
    for kind, items, per_call in (
        ("params", params, PARAMS_PER_CALL),
        ("tags", tags, TAGS_PER_CALL),
        ("metrics", metrics, METRICS_PER_CALL),
    ):
        for start in range(0, len(items), per_call):
            client.log_batch(run_id, **{kind: list(items[start : start + per_call])})


class Writer:
    """The process's one thread that writes the runs' metrics in the order they were logged,
    so that training does not wait for the store; what a run logs within
    :data:`WRITE_EVERY` seconds goes in one call. One thread for all runs: a fused group
    logs 24 runs at once, and a thread each took more connections than the SQLite store's
    pool holds."""

    _instance: Writer | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Writer:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self):
        self._queue: queue.SimpleQueue[tuple[Run, list[Metric] | threading.Event]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._drain, name="metrics-writer", daemon=True)
        self._thread.start()

    def put(self, run: Run, metrics: list[Metric]) -> None:
        self._queue.put((run, metrics))

    def flush(self, run: Run) -> None:
        """Return once everything put so far for ``run`` is written, or kept as lost."""
        done = threading.Event()
        self._queue.put((run, done))
        done.wait()

    def _drain(self) -> None:
        while True:
            batches: dict[Run, list[Metric]] = {}
            flushed: list[threading.Event] = []
            item = self._queue.get()
            # What comes within WRITE_EVERY goes in the same calls, unless a run is waiting
            # to end.
            deadline = time.monotonic() + WRITE_EVERY
            while True:
                run, payload = item
                if isinstance(payload, threading.Event):
                    flushed.append(payload)
                else:
                    batches.setdefault(run, []).extend(payload)
                wait = 0 if flushed else deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            for run, batch in batches.items():
                try:
                    run.write_metrics(batch)
                except Exception:
                    # Whatever went wrong, the thread must live on: runs wait on it to end.
                    log.exception(
                        "could not write %d metric values of run %s", len(batch), run.name
                    )
                    run.lost.metrics.extend(batch)
            for done in flushed:
                done.set()
