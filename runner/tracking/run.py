"""One MLflow run, ended on every path with its outcome, and recorded by the writer thread.

Every store call of a run is made by the writer thread (:mod:`runner.tracking.writer`), in
the order the job asked for it: the run's creation, its artifacts, and its end. What it
logs (params, tags, metrics, dataset inputs) waits in the run until the writer writes it
all at once: when the run ends, or after ``flush_every`` seconds for a long one. A run is
so recorded in what the store's floor is, one create, one batch and one terminate (and
its dataset inputs), and training never waits for the store. A single run waits for its
record before its job ends; a sweep's job does not, and its sweep waits for them all at
its end.

When the store fails (a tracking server that went away, a full disk), training goes on;
at the end, what could not be recorded is kept in ``unrecorded.json`` and
:class:`Unrecorded` says so in one line.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.tracking import model
from runner.tracking.lost import UNRECORDED_FILE, Lost, Unrecorded
from runner.tracking.store import masked, reason
from runner.tracking.writer import Writer, log_batch

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities import DatasetInput, Metric
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"
STATUS = {COMPLETED: "FINISHED", DIVERGED: "FAILED", FAILED: "FAILED", INTERRUPTED: "KILLED"}

# A dataset another job inserted at the same moment is found on the second try.
DATASET_TRIES = 2
# Seconds a single run's values wait before they are written: its page follows its epochs.
FLUSH_SINGLE = 1.0
# Seconds a sweep's job's values wait: a short job is one batch, a long one shows progress.
FLUSH_SWEEP = 30.0


class Recording:
    """Where an exception becomes a run's status: what a job's run does with its outcome
    whether its store calls are made in this process (:class:`Run`) or in a tracking
    process (:class:`runner.tracking.remote.RemoteRun`). A run that has this offers
    ``set_tags``, ``log_files``, ``end``, ``wait`` and ``keep_unrecorded`` as :class:`Run`
    does, and an ``outcome``."""

    outcome: str

    def log_texts(self, texts: dict[str, str]) -> None:
        """Text artifacts, several in one store call: each call stages and copies."""
        self.log_files({path: text.encode() for path, text in texts.items()})

    def log_figure(self, figure: Any, path: str) -> None:
        """The matplotlib ``figure`` as the image artifact ``path``, rendered now: the next
        run may draw over the same figure before the writer writes it."""
        image = io.BytesIO()
        figure.savefig(image, format=Path(path).suffix.lstrip("."))
        self.log_files({path: image.getvalue()})

    def fail(self, error: BaseException) -> None:
        """End the run FAILED with ``error``: its message as the tag ``error``, its
        traceback as the artifact ``error.txt``."""
        self.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        trace = traceback.format_exception(type(error), error, error.__traceback__)
        self.log_texts({"error.txt": "".join(trace)})
        self.end(FAILED)

    @contextmanager
    def recording(self, uri: str, unrecorded: Path, deferred: bool = False) -> Iterator[Recording]:
        """Yield the run, and end it on every path: with the outcome the job set when the
        body returns, ``failed`` (with the error) when it raises, ``interrupted`` on Ctrl-C.
        This is where an exception becomes a run's status.

        What the store did not take is kept in the file ``unrecorded``. After a body that
        returned, the run is waited for and :class:`Unrecorded` raised then, so that the
        caller can exit non-zero; unless ``deferred`` (a sweep's job): its record is then
        closed by the writer while the sweep goes on, which says what it could not keep."""
        try:
            yield self
        except KeyboardInterrupt:
            self._close(INTERRUPTED, uri, unrecorded)
            raise
        except Unrecorded:
            # Another run, opened inside this one (several runs of one process), could not
            # be recorded in full: this run has its own outcome.
            self._close(self.outcome, uri, unrecorded)
            raise
        except BaseException as error:
            self.fail(error)
            self.wait()
            self.keep_unrecorded(uri, unrecorded)
            raise
        else:
            if deferred:
                self.end(self.outcome, (uri, unrecorded))
                return
            line = self._close(self.outcome, uri, unrecorded)
            if line is not None:
                raise Unrecorded(line)

    def _close(self, outcome: str, uri: str, unrecorded: Path) -> str | None:
        """End the run with ``outcome`` and wait for it; what was lost, in one line."""
        self.end(outcome)
        self.wait()
        return self.keep_unrecorded(uri, unrecorded)


@dataclass
class Logged:
    """What a run has logged and the writer has not written yet."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    inputs: list[tuple[str, DatasetInput]] = field(default_factory=list)


class Run(Recording):
    """One MLflow run of experiment ``experiment_id``, created with ``tags`` by the writer
    thread (:meth:`create`). ``outcome`` starts as ``completed``; the job changes it to
    ``diverged`` when the loss stops being finite. ``flush_every``: how long what it logs
    may wait before it is written (:data:`FLUSH_SINGLE`, :data:`FLUSH_SWEEP`).

    A write the store refuses does not stop the job: it is kept in :attr:`lost`. After the
    first refusal (:attr:`fault`), later writes are kept without trying, so that a store
    that is gone costs one timeout rather than one per epoch; one more try at the end
    records everything if the store has come back."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        flush_every: float = FLUSH_SINGLE,
    ):
        self.client = client
        self.experiment_id = experiment_id
        self.name = name
        self.flush_every = flush_every
        self.run_id: str | None = None
        self.outcome = COMPLETED
        self.fault: str | None = None
        self.artifact_error: str | None = None
        self.lost = Lost()
        self.ended = threading.Event()
        self._logged = Logged(tags=dict(tags))
        self._lock = threading.Lock()
        self._writer = Writer.get()
        self._writer.do(self, self.create)

    # In the job's thread: what the run logs waits in it; its store calls are queued.

    def log_params(self, params: dict[str, object]) -> None:
        self._log(params={key: str(value) for key, value in params.items()})

    def set_tags(self, tags: dict[str, object]) -> None:
        self._log(tags={key: str(value) for key, value in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._log(metrics=[Metric(key, float(v), stamp, step) for key, v in metrics.items()])

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
            entry = DatasetInput(Dataset(**dataset.to_dict()), tags=tags)
            inputs.append((f"{name}-{context}", entry))
        self._log(inputs=inputs)

    def _log(self, **logged: Any) -> None:
        with self._lock:
            for kind, values in logged.items():
                held = getattr(self._logged, kind)
                if isinstance(held, dict):
                    held.update(values)
                else:
                    held.extend(values)
        self._writer.due(self)

    # In the writer's thread: the store calls.

    def _store(self, write: Callable[[], object]) -> bool:
        """Call ``write`` unless the store has failed already; False when it was not written.
        Any error counts, not only the store's: recording must never stop training."""
        if self.fault is None:
            try:
                write()
                return True
            except Exception as error:
                self.fault = reason(error)
                log.warning(
                    "tracking store failed for run %s (%s); training goes on, and what it "
                    "cannot record is kept in %s at the end",
                    self.name,
                    self.fault,
                    UNRECORDED_FILE,
                )
        return False

    def create(self) -> None:
        """Create the run in the store, with the tags it has logged so far."""
        with self._lock:
            tags, self._logged.tags = self._logged.tags, {}

        def write() -> None:
            created = self.client.create_run(self.experiment_id, run_name=self.name, tags=tags)
            self.run_id = created.info.run_id

        if not self._store(write):
            self.lost.tags.update(tags)

    def flush(self) -> None:
        """Write what the run has logged: params, tags and metrics in one batch (or as few
        as MLflow's limits allow), then its dataset inputs."""
        from mlflow.entities import Param, RunTag

        with self._lock:
            logged, self._logged = self._logged, Logged()
        params = [Param(k, v) for k, v in logged.params.items()]
        tags = [RunTag(k, v) for k, v in logged.tags.items()]
        if (params or tags or logged.metrics) and not self._store(
            lambda: log_batch(self.client, self.run_id, logged.metrics, params, tags)
        ):
            self.lost.params.update(logged.params)
            self.lost.tags.update(logged.tags)
            self.lost.metrics.extend(logged.metrics)
        if logged.inputs and not self._store(lambda: self._write_inputs(logged.inputs)):
            self.lost.inputs.extend(name for name, _ in logged.inputs)

    def _write_inputs(self, inputs: list[tuple[str, DatasetInput]]) -> None:
        # MLflow looks a dataset up and inserts it when it is missing, with no lock in
        # between: two jobs of a parallel sweep logging the same new dataset at once both
        # insert it, and the second breaks the store's unique key. Its second try finds the
        # row the other job created.
        for attempt in range(DATASET_TRIES):
            try:
                self.client.log_inputs(self.run_id, datasets=[entry for _, entry in inputs])
                return
            except Exception as error:
                if attempt + 1 == DATASET_TRIES or "unique" not in str(error).lower():
                    raise

    def _artifact(self, path: str, write: Callable[[], object]) -> None:
        """MLflow stages an artifact in a temporary file and copies it into the store, and a
        local store writes a hidden file beside the artifact that it renames once complete:
        a write that fails part way leaves no artifact behind, and the run lists it as lost."""
        if self.fault is None:
            try:
                write()
                return
            except Exception as error:
                self.lose_artifact(path, reason(error))
        else:
            self.lose_artifact(path, self.fault)

    def lose_artifact(self, path: str, why: str) -> None:
        """The artifact ``path`` could not be written, for the reason ``why``: the run lists
        it as lost, and a completed run ends FAILED."""
        self.artifact_error = self.artifact_error or why
        self.lost.artifacts.append(path)

    def log_files(self, files: dict[str, bytes]) -> None:
        """Artifacts from their bytes, by path, in one store call (a file rendered once can go
        to several runs)."""

        def write() -> None:
            with tempfile.TemporaryDirectory() as staging:
                for path, data in files.items():
                    Path(staging, path).write_bytes(data)
                if len(files) > 1:
                    self.client.log_artifacts(self.run_id, staging)
                else:  # a file alone is written whole or not at all (see _artifact)
                    self.client.log_artifact(self.run_id, str(Path(staging, *files)))

        self._writer.do(self, lambda: self._artifact(", ".join(files), write))

    def log_model(self, net: Any, step: int) -> None:
        """Log the trained Keras model ``net``, as of epoch ``step``, once the run exists
        (:func:`runner.tracking.model.log_model`), in this thread: Keras saves a model with
        process-wide state that the next job's Keras must not meet half changed."""
        run_id = self.created()
        self._artifact(
            model.MODEL,
            lambda: model.log_model(self.client, self.experiment_id, run_id, net, step),
        )

    def created(self) -> str | None:
        """The run's id, once the writer has made every store call asked before; None when
        the store could not create the run."""
        self._writer.wait()
        return self.run_id

    def end(self, outcome: str, keep: tuple[str, Path] | None = None) -> None:
        """End the run with ``outcome``, after everything it logged is written; ``keep``, a
        store's URI and a file: once it has ended, keep there what the store did not take
        (:meth:`keep_unrecorded`). :meth:`wait` waits for both."""
        self._writer.end(self, lambda: self._end(outcome, keep))

    def wait(self) -> None:
        """Return once the run has ended in the store (or what it could not take is lost).
        A signal meanwhile waits: the run's record is being closed, and ends as it is."""
        from runner import stop

        with stop.held():
            self.ended.wait()

    def _end(self, outcome: str, keep: tuple[str, Path] | None) -> None:
        """In the writer's thread: one more try for what a failed store did not take, then
        the outcome, with the last values, and the status. A completed run whose artifacts
        could not be written ends FAILED, tagged with what is missing, when the store takes
        the rest."""
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
        with self._lock:
            self._logged.tags.update(tags)
        self.flush()
        status = STATUS[outcome]
        if not self._store(lambda: self.client.set_terminated(self.run_id, status=status)):
            self.lost.status = status
        try:
            if keep is not None:
                self.keep_unrecorded(*keep)
        finally:
            self.ended.set()

    def _retry(self) -> None:
        """One more try for the params, tags and metrics that a failed store did not take,
        and the run's creation first when that failed too."""
        from mlflow.entities import Param, RunTag

        lost = self.lost
        try:
            if self.run_id is None:
                created = self.client.create_run(
                    self.experiment_id, run_name=self.name, tags=dict(lost.tags)
                )
                self.run_id = created.info.run_id
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
            f"{self.lost.summary()} could not be recorded ({why}); {kept}"
        )
        log.error("%s", line)
        return line
