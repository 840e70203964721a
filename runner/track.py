"""Tracking: one MLflow run per job, and one parent run per sweep that its jobs nest under.

Everything goes through ``MlflowClient`` with explicit run ids rather than MLflow's
process-wide active run, so one process can record several runs side by side.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import mlflow.data
import numpy as np
import requests
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID
from sqlalchemy.exc import SQLAlchemyError

from runner.config import UserError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = ROOT / "mlflow.db"

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"
STATUS = {COMPLETED: "FINISHED", DIVERGED: "FAILED", FAILED: "FAILED", INTERRUPTED: "KILLED"}

# Seconds to wait for a tracking server's health answer before calling it unreachable.
SERVER_TIMEOUT = 5

SWEEP_ID = "sweep_id"
ROLE = "role"
FINGERPRINT = "fingerprint"
# MLflow's log_batch takes at most 100 params and 1000 metrics a call.
PARAMS_PER_CALL = 100


def tracking_uri(configured: str | None) -> str:
    """``tracking.uri`` when given, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite
    file as an absolute path, so every job of a sweep writes to the same store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}"


def check_server(uri: str) -> None:
    """Fail at once, before any training, when a tracking server does not answer: MLflow's
    own client would retry each call with backoff for minutes first."""
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as error:
        raise UserError(
            f"tracking server {uri} is not reachable ({type(error).__name__}). Start it "
            "(make server runs one on 127.0.0.1:5000), or drop tracking.uri to use the "
            "local SQLite store."
        ) from None


def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def _process_tags() -> dict[str, str]:
    """Who writes a run: a run left RUNNING by a process that is gone can then be told
    from one still training."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STORE_ERRORS = (MlflowException, SQLAlchemyError, OSError)


def unusable(uri: str, error: Exception) -> UserError:
    """The message for a store that cannot be opened or read."""
    reason = getattr(error, "message", None) or str(error).splitlines()[0]
    return UserError(
        f"tracking store {uri} cannot be used: {reason}. Point tracking.uri (or "
        "MLFLOW_TRACKING_URI) at an MLflow store, or at a new file to start one."
    )


class Tracker:
    """A tracking store: finds or creates experiments, sweep parents and runs."""

    def __init__(self, uri: str):
        self.uri = uri
        if uri.startswith(("http://", "https://")):
            check_server(uri)
        try:
            # A SQLite store is opened, and migrated, here: a corrupt file fails at once.
            self.client = MlflowClient(tracking_uri=uri)
        except STORE_ERRORS as error:
            raise unusable(uri, error) from None

    def _all_experiments(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def reap_orphans(self) -> list[str]:
        """End as KILLED (``outcome=interrupted``) the runs left RUNNING on this host by a
        process that no longer exists, such as one killed with SIGKILL; return their names."""
        reaped = []
        for run in self.client.search_runs(
            self._all_experiments(),
            filter_string=f"attributes.status = 'RUNNING' and tags.host = '{socket.gethostname()}'",
            max_results=50000,
        ):
            pid = run.data.tags.get("pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                Run(self.client, run.info.run_id, run.info.run_name).end(INTERRUPTED)
                reaped.append(run.info.run_name)
        return reaped

    def finished_run(self, experiment_id: str, fingerprint: str) -> object | None:
        """A FINISHED run of the experiment with this config fingerprint, if there is one."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"status = 'FINISHED' and tags.{FINGERPRINT} = '{fingerprint}'",
            max_results=1,
        )
        return found[0] if found else None

    def adopt(self, run_id: str, sweep_id: str, parent_id: str) -> None:
        """Move a finished run into a sweep, so that a resumed sweep's table is complete."""
        self.client.set_tag(run_id, SWEEP_ID, sweep_id)
        self.client.set_tag(run_id, MLFLOW_PARENT_RUN_ID, parent_id)

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing. For a SQLite store, its
        artifacts go in ``mlartifacts/`` beside the database, wherever the job runs."""
        try:
            found = self.client.get_experiment_by_name(name)
        except STORE_ERRORS as error:
            raise unusable(self.uri, error) from None
        if found is not None:
            return found.experiment_id
        try:
            db = sqlite_path(self.uri)
            location = (db.parent / "mlartifacts" / quote(name, safe="")).as_uri() if db else None
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as error:
            # Another process of the same sweep may have created it a moment ago.
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            raise UserError(f"tracking store {self.uri} cannot be used: {error.message}") from None

    def sweep_parent(
        self, experiment_id: str, sweep_id: str, name: str, claim: bool = False
    ) -> str:
        """The run id of the sweep's parent run in this experiment, created when missing.
        ``claim`` (the sweep's own process, at its start) marks a parent found from an earlier
        sweep into the same directory RUNNING again, as this process's, so that the orphan
        check does not take it for the earlier, dead process's."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.{SWEEP_ID} = '{sweep_id}' and tags.{ROLE} = 'sweep'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if claim:
                self.client.update_run(run_id, status="RUNNING")
                tags = [RunTag(k, v) for k, v in _process_tags().items()]
                self.client.log_batch(run_id, tags=tags)
            return run_id
        tags = {SWEEP_ID: sweep_id, ROLE: "sweep", **_process_tags()}
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        """End the sweep's parent runs, in every experiment, with the sweep's outcome."""
        for parent in self.client.search_runs(
            self._all_experiments(),
            filter_string=f"tags.{SWEEP_ID} = '{sweep_id}' and tags.{ROLE} = 'sweep'",
        ):
            Run(self.client, parent.info.run_id, parent.info.run_name).end(outcome)

    @contextmanager
    def open_run(
        self, experiment_id: str, name: str, tags: dict[str, str], parent_id: str | None = None
    ) -> Iterator[Run]:
        """Start a run and end it on every path: with the outcome the job set when the body
        returns, ``failed`` (with the error) when it raises, ``interrupted`` on Ctrl-C."""
        tags = dict(tags, **{ROLE: "job"}, **_process_tags())
        if parent_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        created = self.client.create_run(experiment_id, run_name=name, tags=tags)
        run = Run(self.client, created.info.run_id, name)
        try:
            yield run
        except KeyboardInterrupt:
            run.end(INTERRUPTED)
            raise
        except BaseException as error:
            run.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            run.log_text(traceback.format_exc(), "error.txt")
            run.end(FAILED)
            raise
        else:
            run.end(run.outcome)


class Run:
    """One MLflow run, fed by id. ``outcome`` starts as ``completed``; the job changes it to
    ``diverged`` when the loss stops being finite."""

    def __init__(self, client: MlflowClient, run_id: str, name: str):
        self.client = client
        self.run_id = run_id
        self.name = name
        self.outcome = COMPLETED

    def log_params(self, params: dict[str, object]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start : start + PARAMS_PER_CALL])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_inputs(
        self, name: str, source: dict[str, str], splits: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Record each split as an MLflow dataset input (name, source, digest), so the UI
        shows which data a run saw and whether two runs saw the same."""
        inputs = []
        for context, (x, y) in splits.items():
            dataset = mlflow.data.from_numpy(
                x, targets=y, source=CodeDatasetSource(tags=source), name=f"{name}-{context}"
            )
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
            # MLflow's fluent log_input does the same conversion, but only for the active run.
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
        self.client.log_inputs(self.run_id, datasets=inputs)

    def set_tags(self, tags: dict[str, object]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_figure(self, figure: object, path: str) -> None:
        self.client.log_figure(self.run_id, figure, path)

    def end(self, outcome: str) -> None:
        self.set_tags({"outcome": outcome})
        self.client.set_terminated(self.run_id, status=STATUS[outcome])
