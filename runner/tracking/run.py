"""One MLflow run, fed by id, and ended on every path with its outcome.

A run's metrics are written by the writer thread (:mod:`runner.tracking.writer`), so that
training never waits for the store, and all of them are written before the run's status is
set. When the store fails in the middle of a run (a tracking server that went away, a full
disk), training goes on; at the end, what could not be recorded is kept in
``unrecorded.json`` and :class:`Unrecorded` says so in one line.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.tracking import model
from runner.tracking.lost import UNRECORDED_FILE, Lost, Unrecorded
from runner.tracking.store import masked, reason
from runner.tracking.writer import Writer, log_batch

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"
STATUS = {COMPLETED: "FINISHED", DIVERGED: "FAILED", FAILED: "FAILED", INTERRUPTED: "KILLED"}

# A dataset another job inserted at the same moment is found on the second try.
DATASET_TRIES = 2


class Run:
    """One MLflow run, fed by id. ``outcome`` starts as ``completed``; the job changes it to
    ``diverged`` when the loss stops being finite.

    A write the store refuses does not stop the job: it is kept in :attr:`lost`. After the
    first refusal (:attr:`fault`), later writes are kept without trying, so that a store
    that is gone costs one timeout rather than one per epoch; one more try at the end
    records everything if the store has come back."""

    def __init__(self, client: MlflowClient, run_id: str, name: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.name = name
        self.experiment_id = experiment_id
        self.outcome = COMPLETED
        self.fault: str | None = None
        self.artifact_error: str | None = None
        self.lost = Lost()
        self._lock = threading.Lock()
        self._queued = False

    def _store(self, write: Callable[[], object]) -> bool:
        """Call ``write`` unless the store has failed already; False when it was not written.
        Any error counts, not only the store's: recording must never stop training."""
        if self.fault is None:
            try:
                write()
                return True
            except Exception as error:
                with self._lock:
                    if self.fault is None:
                        self.fault = reason(error)
                        log.warning(
                            "tracking store failed for run %s (%s); training goes on, and what "
                            "it cannot record is kept in %s at the end",
                            self.name,
                            self.fault,
                            UNRECORDED_FILE,
                        )
        return False

    def log_params(self, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        values = {key: str(value) for key, value in params.items()}
        items = [Param(key, value) for key, value in values.items()]
        if not self._store(lambda: log_batch(self.client, self.run_id, params=items)):
            self.lost.params.update(values)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Queue the metrics for the writer thread; :meth:`end` waits for them."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self._queued = True
        Writer.get().put(self, batch)

    def write_metrics(self, batch: list[Metric]) -> None:
        """Write metrics the writer thread took from the queue, or keep them as lost."""
        if not self._store(lambda: log_batch(self.client, self.run_id, metrics=batch)):
            self.lost.metrics.extend(batch)

    def log_inputs(
        self, name: str, source: dict[str, str], splits: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Record each split as an MLflow dataset input (name, source, digest), so the UI
        shows which data a run saw and whether two runs saw the same."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for context, (x, y) in splits.items():
            dataset = mlflow.data.from_numpy(
                x, targets=y, source=CodeDatasetSource(tags=source), name=f"{name}-{context}"
            )
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
            # What MLflow's fluent log_input records, which takes only the active run.
            inputs.append(DatasetInput(Dataset(**dataset.to_dict()), tags=tags))

        def write() -> None:
            # MLflow looks a dataset up and inserts it when it is missing, with no lock in
            # between: two jobs of a parallel sweep logging the same new dataset at once both
            # insert it, and the second breaks the store's unique key. Its second try finds
            # the row the other job created.
            for attempt in range(DATASET_TRIES):
                try:
                    self.client.log_inputs(self.run_id, datasets=inputs)
                    return
                except Exception as error:
                    if attempt + 1 == DATASET_TRIES or "unique" not in str(error).lower():
                        raise

        if not self._store(write):
            self.lost.inputs.extend(f"{name}-{context}" for context in splits)

    def set_tags(self, tags: dict[str, object]) -> None:
        from mlflow.entities import RunTag

        values = {key: str(value) for key, value in tags.items()}
        items = [RunTag(key, value) for key, value in values.items()]
        if not self._store(lambda: log_batch(self.client, self.run_id, tags=items)):
            self.lost.tags.update(values)

    def _artifact(self, path: str, write: Callable[[], object]) -> None:
        """MLflow stages an artifact in a temporary file and copies it into the store, and a
        local store writes a hidden file beside the artifact that it renames once complete:
        a write that fails part way leaves no artifact behind, and the run lists it as lost."""
        if self.fault is None:
            try:
                write()
                return
            except Exception as error:
                self.artifact_error = self.artifact_error or reason(error)
        else:
            self.artifact_error = self.artifact_error or self.fault
        self.lost.artifacts.append(path)

    def log_text(self, text: str, path: str) -> None:
        self._artifact(path, lambda: self.client.log_text(self.run_id, text, path))

    def log_texts(self, texts: dict[str, str]) -> None:
        """Several text artifacts in one store call: each call stages and copies, so one
        for all of them is what keeps a fused job's recording cheap."""

        def write() -> None:
            with tempfile.TemporaryDirectory() as staging:
                for path, text in texts.items():
                    Path(staging, path).write_text(text)
                self.client.log_artifacts(self.run_id, staging)

        self._artifact(", ".join(texts), write)

    def log_figure(self, figure: object, path: str) -> None:
        self._artifact(path, lambda: self.client.log_figure(self.run_id, figure, path))

    def log_model(self, net: Any, step: int) -> None:
        """Log the trained Keras model ``net``, as of epoch ``step``: see
        :func:`runner.tracking.model.log_model`."""
        self._artifact(
            model.MODEL,
            lambda: model.log_model(self.client, self.experiment_id, self.run_id, net, step),
        )

    def _retry(self) -> None:
        """One more try for the params, tags and metrics that a failed store did not take."""
        from mlflow.entities import Param, RunTag

        lost = self.lost
        try:
            log_batch(
                self.client,
                self.run_id,
                metrics=lost.metrics,
                params=[Param(key, value) for key, value in lost.params.items()],
                tags=[RunTag(key, value) for key, value in lost.tags.items()],
            )
        except Exception:
            return
        log.info("tracking store took run %s's writes again after failing", self.name)
        self.fault = None
        lost.params.clear()
        lost.tags.clear()
        lost.metrics.clear()

    def end(self, outcome: str) -> None:
        """Write the queued metrics, then the outcome and the status, so that a run never
        shows as ended while metrics it logged are still on their way. A completed run whose
        artifacts could not be written ends FAILED, tagged with what is missing, when the
        store takes the rest."""
        if self._queued:
            Writer.get().flush(self)
        if self.fault is not None:
            self._retry()
        tags = {"outcome": outcome}
        if self.lost.artifacts:
            tags["unrecorded"] = ", ".join(self.lost.artifacts)
            # A store that takes the status says the run is incomplete; one that is gone
            # leaves the job's own outcome to unrecorded.json.
            if outcome == COMPLETED and self.fault is None:
                outcome = FAILED
                tags["outcome"] = FAILED
                tags["error"] = f"could not write {tags['unrecorded']}: {self.artifact_error}"
        self.outcome = outcome
        self.set_tags(tags)
        status = STATUS[outcome]
        if not self._store(lambda: self.client.set_terminated(self.run_id, status=status)):
            self.lost.status = status

    def fail(self, error: BaseException) -> None:
        """End the run FAILED with ``error``: its message as the tag ``error``, its
        traceback as the artifact ``error.txt``."""
        self.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        trace = traceback.format_exception(type(error), error, error.__traceback__)
        self.log_text("".join(trace), "error.txt")
        self.end(FAILED)

    def keep_unrecorded(self, uri: str, path: Path) -> str | None:
        """When part of the run could not be recorded: write it to ``path`` as JSON, log one
        line that says what and where, and return that line; None when nothing was lost."""
        if not self.lost:
            return None
        why = "; ".join(e for e in (self.fault, self.artifact_error) if e)
        record = {
            "store": masked(uri),
            "run_id": self.run_id,
            "run_name": self.name,
            "error": why,
            "outcome": self.outcome,
            **self.lost.record(),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))
            kept = f"listed in {path}"
        except OSError as error:
            kept = f"and could not be kept in {path} either ({reason(error)})"
        line = (
            f"run {self.name} ({self.run_id}) is incomplete in {masked(uri)}: "
            f"{self.lost.summary()} "
            f"could not be recorded ({why}); {kept}"
        )
        log.error("%s", line)
        return line

    @contextmanager
    def recording(self, uri: str, unrecorded: Path) -> Iterator[Run]:
        """Yield the run, and end it on every path: with the outcome the job set when the
        body returns, ``failed`` (with the error) when it raises, ``interrupted`` on Ctrl-C.
        This is where an exception becomes a run's status.

        What the store did not take is kept in the file ``unrecorded``; after a body that
        returned, :class:`Unrecorded` is raised then, so that the caller can exit
        non-zero."""
        try:
            yield self
        except KeyboardInterrupt:
            self.end(INTERRUPTED)
            self.keep_unrecorded(uri, unrecorded)
            raise
        except Unrecorded:
            # Another run, opened inside this one (several runs of one process), could not
            # be recorded in full: this run has its own outcome.
            self.end(self.outcome)
            self.keep_unrecorded(uri, unrecorded)
            raise
        except BaseException as error:
            self.fail(error)
            self.keep_unrecorded(uri, unrecorded)
            raise
        else:
            try:
                self.end(self.outcome)
            except KeyboardInterrupt:
                # A signal while the run's record was being closed: it ends KILLED.
                self.end(INTERRUPTED)
                self.keep_unrecorded(uri, unrecorded)
                raise
            line = self.keep_unrecorded(uri, unrecorded)
            if line is not None:
                raise Unrecorded(line)
