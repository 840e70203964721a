"""Tracking: one MLflow run per job, and one parent run per sweep that its jobs nest under.

Everything goes through ``MlflowClient`` with explicit run ids rather than MLflow's
process-wide active run, so one process can record several runs side by side.

A run's metrics are written by a thread of its own, so that training never waits for the
store, and all of them are written before the run's status is set. When the store fails in
the middle of a run (a tracking server that went away, a full disk), training goes on; at
the end, what could not be recorded is kept in ``unrecorded.json`` in the job's output
directory and :class:`Unrecorded` says so in one line.

MLflow is imported only when a store is opened: with ``tracking.enabled=false`` the job
gets :class:`Untracked`, records nothing and never loads MLflow.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sized
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runner import stop
from runner.config import UserError

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = ROOT / "mlflow.db"

COMPLETED, DIVERGED, FAILED, INTERRUPTED = "completed", "diverged", "failed", "interrupted"
STATUS = {COMPLETED: "FINISHED", DIVERGED: "FAILED", FAILED: "FAILED", INTERRUPTED: "KILLED"}

# Seconds to wait for a tracking server's health answer before calling it unreachable.
SERVER_TIMEOUT = 5

# MLflow retries a failed HTTP call 7 times with exponential backoff and waits 120 s for an
# answer: minutes per call once a tracking server has gone. The runner gives up after
# seconds instead, and goes on training; a value set in the environment wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

SWEEP_ID = "sweep_id"
ROLE = "role"
FINGERPRINT = "fingerprint"
# MLflow's log_batch takes at most 100 params and 1000 metrics a call.
PARAMS_PER_CALL = 100
METRICS_PER_CALL = 1000
UNRECORDED_FILE = "unrecorded.json"
# A dataset another job inserted at the same moment is found on the second try.
DATASET_TRIES = 2
# How long the metrics writer waits for more epochs before it writes: a store call costs
# about 5 ms besides its values, and a fused group logs 24 runs an epoch.
WRITE_EVERY = 1.0
# The name of a run's logged model: runs:/<run id>/model.
MODEL = "model"
# What serving a logged model installs besides Keras, by the backend it was saved on.
BACKEND_PACKAGES = {"jax": ("jax",), "tensorflow": ("tensorflow", "tensorflow-cpu")}


def tracking_uri(configured: str | None) -> str:
    """``tracking.uri`` when given, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite
    file as an absolute path, so every job of a sweep writes to the same store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}"


def open_tracker(tracking: DictConfig) -> Tracker | Untracked:
    """The store that the ``tracking`` config names, or, when ``tracking.enabled`` is false,
    a stand-in that records nothing."""
    if not tracking.enabled:
        return Untracked()
    uri = tracking_uri(tracking.uri)
    if uri not in _trackers:
        _trackers[uri] = Tracker(uri, tracking.adopt_foreign_db)
    return _trackers[uri]


# One tracker per store and process: the jobs of a sweep in one process share its client,
# the experiments it found and the sweep parents it found or made.
_trackers: dict[str, Tracker] = {}


# A UI bound to every interface is reached from this machine on the loopback one.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def ui_address() -> str:
    """Where `make ui` serves a SQLite store: ``$MLFLOW_HOST`` and ``$MLFLOW_PORT``, which
    ``mlflow ui`` itself reads and `make ui HOST=... PORT=...` sets, else MLflow's defaults
    127.0.0.1 and 5000; so a link printed here opens the UI started with the same
    variables."""
    host = os.environ.get("MLFLOW_HOST") or "127.0.0.1"
    host = LOOPBACK.get(host, host)
    if ":" in host:  # an IPv6 address, which a URL brackets
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('MLFLOW_PORT') or 5000}"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run (or of an experiment's runs) in the store ``uri``, in
    the UI's "Model training" view: a tracking server's own address, or for a file store
    the one `make ui` serves on."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui_address()
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def latest_page(uri: str) -> str:
    """The UI's runs page of the store's most recently created experiment with runs, for
    `make ui` to print before it serves; a line saying there is none yet otherwise."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return f"no runs yet in {uri}: `make run` records one"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(order_by=["creation_time DESC"])
    for experiment in experiments:
        if client.search_runs([experiment.experiment_id], max_results=1):
            return f"the latest experiment's runs: {ui_url(uri, experiment.experiment_id)}"
    return f"no runs yet in {uri}: `make run` records one"


def check_server(uri: str) -> None:
    """Fail at once, before any training, when a tracking server does not answer: MLflow's
    own client would retry each call with backoff first."""
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as error:
        raise UserError(
            f"tracking server {uri} is not reachable ({type(error).__name__}). Start it "
            "(make server runs one on 127.0.0.1:5000), or drop tracking.uri to use the "
            "local SQLite store."
        ) from None


def check_writable(uri: str) -> None:
    """Fail at once, before any training, when a SQLite store can be read but not written
    (a read-only file, directory or file system): MLflow would fail only when the run is
    created, with a traceback. The probe rewrites the header's ``user_version`` with its
    own value inside a transaction that it rolls back, so the file is left as it was.

    A store that does not exist yet is checked before MLflow creates it, which it retries
    for about 100 s where it cannot: MLflow makes the missing directories, so the nearest
    one that exists must be writable."""
    import sqlalchemy

    db = sqlite_path(uri)
    if db is not None and not db.exists():
        directory = next(parent for parent in db.absolute().parents if parent.exists())
        if not directory.is_dir():
            problem = f"{directory} is a file, not a directory"
        elif not os.access(directory, os.W_OK | os.X_OK):
            problem = f"the directory {directory} is read-only"
        else:
            return
        raise UserError(
            f"tracking store {uri} cannot be created: {problem}. Point tracking.uri (or "
            "MLFLOW_TRACKING_URI) at a file in a writable directory."
        )
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            version = int(connection.exec_driver_sql("PRAGMA user_version").scalar())
            connection.exec_driver_sql(f"PRAGMA user_version = {version}")
            connection.exec_driver_sql("ROLLBACK")
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise UserError(
            f"tracking store {uri} cannot be written: {reason(getattr(error, 'orig', error))}. "
            "Make the file and its directory writable, or point tracking.uri (or "
            "MLFLOW_TRACKING_URI) at another store."
        ) from None
    finally:
        engine.dispose()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite store, also when the URI names it the way SQLite's
    own URIs do (``sqlite:///file:/path?mode=ro&uri=true``); None for another store or an
    in-memory one."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :]
    if path.startswith("file:") and "uri=true" in path.partition("?")[2].split("&"):
        path = path.removeprefix("file:").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


# Tables of MLflow's first schema, which every MLflow store has: a database that has tables
# but not these belongs to another application.
MLFLOW_TABLES = {"experiments", "runs", "metrics", "params", "tags"}
# How many of another application's tables a refusal names.
TABLES_SHOWN = 5


def foreign_tables(db: Path) -> list[str]:
    """The tables of the SQLite file ``db`` when it is another application's database: it
    has tables, but not MLflow's. Empty for an MLflow store and for a file that is missing
    or has no table yet. Read with SQLite alone, so MLflow has not touched the file."""
    if not db.exists() or db.stat().st_size == 0:
        return []
    with closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)) as connection:
        names = {
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    return [] if not names or MLFLOW_TABLES <= names else sorted(names)


@contextmanager
def store_lock(db: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``<db>.lock`` beside a SQLite store. MLflow
    creates a new store's tables in many statements, and a second process that opens the
    file meanwhile creates them too ("duplicate column name"): two sweeps started at once.
    Where no lock file can be made, no store can be made either, and none is held."""
    if db is None:
        yield
        return
    try:
        # MLflow makes a new store's missing directories; the lock file needs them first.
        db.parent.mkdir(parents=True, exist_ok=True)
        handle = open(db.with_name(f"{db.name}.lock"), "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_client(uri: str, way_out: str, adopt_foreign_db: bool = False) -> MlflowClient:
    """MLflow's client of the store ``uri``. Making it opens the store: MLflow creates a
    new SQLite store's tables then, or brings an older store's up to date, and does so
    under :func:`store_lock` and with Ctrl-C held back, as a store left half made cannot be
    opened again. Another application's SQLite database is refused first, with
    ``way_out`` as the way out, unless ``adopt_foreign_db``: MLflow would add its tables to
    it without a word. A store that cannot be used raises one of :func:`store_errors`."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    with store_lock(db), stop.held():
        if db is not None and not adopt_foreign_db:
            tables = foreign_tables(db)
            if tables:
                shown = ", ".join(tables[:TABLES_SHOWN]) + (
                    ", …" if len(tables) > TABLES_SHOWN else ""
                )
                raise UserError(
                    f"tracking store {uri} is not an MLflow store: {db} holds another "
                    f"application's tables ({shown}), not MLflow's, and MLflow would add its "
                    f"own among them. {way_out}"
                )
        return MlflowClient(tracking_uri=uri)


def quoted(value: str) -> str:
    """``value`` as a string in an MLflow search filter. MLflow's syntax has no escapes: it
    takes what lies between the quotes as it is, and its tokenizer reads a backslash before
    a quote as escaping it. So the value goes between the quotes it does not hold, and one
    that holds both kinds or ends in a backslash cannot be searched for."""
    if not value.endswith("\\"):
        for quote in ("'", '"'):
            if quote not in value:
                return f"{quote}{value}{quote}"
    raise UserError(
        f"{value!r} cannot be searched for in an MLflow store, whose filters have no escapes: "
        "a value may hold ' or \" but not both, and may not end in a backslash. Rename it "
        "(for a sweep, its directory: hydra.sweep.dir)."
    )


def _process_tags() -> dict[str, str]:
    """Who writes a run: a run left RUNNING by a process that is gone can then be told
    from one still training."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _owner(run: Any) -> str | None:
    """The other process that writes the RUNNING run ``run``, as ``process 123 on host``;
    None when the run has ended, its process is gone or is this one, or no process is
    recorded. A process on another host cannot be asked, and counts as running."""
    if run.info.status != "RUNNING":
        return None
    host, pid = run.data.tags.get("host", ""), run.data.tags.get("pid", "")
    if not host or not pid.isdigit():
        return None
    if host == socket.gethostname() and (int(pid) == os.getpid() or not _alive(int(pid))):
        return None
    return f"process {pid} on {host}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_errors() -> tuple[type[Exception], ...]:
    """What a store raises when it cannot be used: MLflow's errors, the database's (through
    SQLAlchemy, or SQLite's own when :func:`foreign_tables` reads the file), and the
    operating system's (a full disk; a refused connection, as requests' errors are
    OSErrors)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)


def reason(error: Exception) -> str:
    """An error in one line: MLflow's message, or the exception's first line."""
    text = getattr(error, "message", None) or str(error)
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def unusable(uri: str, error: Exception) -> UserError:
    """The message for a store that cannot be opened or read."""
    text = getattr(error, "message", None) or str(error).splitlines()[0]
    return UserError(
        f"tracking store {uri} cannot be used: {text}. Point tracking.uri (or "
        "MLFLOW_TRACKING_URI) at an MLflow store, or at a new file to start one."
    )


class Unrecorded(Exception):
    """A run ended, but part of it could not be written to the store. The message, which
    the run has logged already, says what and names the file that keeps it."""


# The SQLite stores that this process has found writable: a sweep's later jobs skip the probe.
_writable: set[str] = set()


class Tracker:
    """A tracking store: finds or creates experiments, sweep parents and runs."""

    def __init__(self, uri: str, adopt_foreign_db: bool = False):
        self.uri = uri
        if uri.startswith(("http://", "https://")):
            for name, value in HTTP_LIMITS.items():
                os.environ.setdefault(name, value)
            # urllib3 announces each retry of each call; the run says once what failed.
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
            check_server(uri)
        # MLflow announces each table it creates in a new store, before the job's first line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        probe = uri.startswith("sqlite:") and uri not in _writable
        db = sqlite_path(uri)
        # A new store's directory is checked before MLflow creates the file; an existing
        # store after MLflow has opened it, which says so when it is not an MLflow store.
        new = probe and db is not None and not db.exists()
        if new:
            check_writable(uri)
        try:
            # A SQLite store is opened, and migrated, here: a corrupt file fails at once.
            self.client = open_client(
                uri,
                "Point tracking.uri (or MLFLOW_TRACKING_URI) at an MLflow store or a new file, "
                "or set tracking.adopt_foreign_db=true to keep MLflow's tables in this "
                "database beside the others.",
                adopt_foreign_db,
            )
        except store_errors() as error:
            raise unusable(uri, error) from None
        if probe and not new:
            check_writable(uri)
        if probe:
            _writable.add(uri)
        self._experiments: dict[str, str] = {}
        self._sweep_parents: dict[tuple[str, str], str] = {}

    def _all_experiments(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def _end(self, run_id: str, outcome: str) -> None:
        """End a run that this process did not write, such as an orphan or a sweep's parent."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag("outcome", outcome)])
        self.client.set_terminated(run_id, status=STATUS[outcome])

    def reap_orphans(self) -> list[str]:
        """End as KILLED (``outcome=interrupted``) the runs left RUNNING on this host by a
        process that no longer exists, such as one killed with SIGKILL; return their names."""
        reaped = []
        for run in self.client.search_runs(
            self._all_experiments(),
            filter_string="attributes.status = 'RUNNING' and tags.host = "
            + quoted(socket.gethostname()),
            max_results=50000,
        ):
            pid = run.data.tags.get("pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                self._end(run.info.run_id, INTERRUPTED)
                reaped.append(run.info.run_name)
        return reaped

    def finished_run(self, experiment_id: str, fingerprint: str) -> object | None:
        """A FINISHED run of the experiment with this config fingerprint, if there is one."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"status = 'FINISHED' and tags.{FINGERPRINT} = {quoted(fingerprint)}",
            max_results=1,
        )
        return found[0] if found else None

    def adopt(self, run_id: str, sweep_id: str, parent_id: str) -> None:
        """Move a finished run into a sweep, so that a resumed sweep's table is complete."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        self.client.set_tag(run_id, SWEEP_ID, sweep_id)
        self.client.set_tag(run_id, MLFLOW_PARENT_RUN_ID, parent_id)

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing. For a SQLite store, its
        artifacts go in ``mlartifacts/`` beside the database, wherever the job runs."""
        if name not in self._experiments:
            self._experiments[name] = self._experiment(name)
        return self._experiments[name]

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_experiment_by_name(name)
        except store_errors() as error:
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
        ``claim`` (the sweep's own process, at its start) takes a parent found from an earlier
        sweep into the same directory for this process: marked RUNNING again, as this
        process's, so that the orphan check does not take it for the earlier, dead
        process's. A parent whose process still runs is never taken: two sweeps into one
        directory at once would mix their jobs (and their output directories)."""
        key = (experiment_id, sweep_id)
        if claim:
            # Two sweeps that resume one directory at once would both find its parent's
            # process gone, and both take it.
            with store_lock(sqlite_path(self.uri)):
                self._sweep_parents[key] = self._sweep_parent(experiment_id, sweep_id, name, True)
        elif key not in self._sweep_parents:
            self._sweep_parents[key] = self._sweep_parent(experiment_id, sweep_id, name, False)
        return self._sweep_parents[key]

    def _sweep_parent(self, experiment_id: str, sweep_id: str, name: str, claim: bool) -> str:
        from mlflow.entities import RunTag

        found = self._parents([experiment_id], sweep_id, max_results=1)
        if not found:
            tags = {SWEEP_ID: sweep_id, ROLE: "sweep", **_process_tags()}
            run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            # Parallel jobs of an experiment that had no parent yet may each have created
            # one: the earliest stays, and a later one is deleted by the job that created it.
            # (Two created in the same millisecond may both stay.) Two sweeps started at once
            # into one directory meet here too: the later one must not take the other's.
            found = self._parents([experiment_id], sweep_id, max_results=1)
            if found[0].info.run_id == run_id:
                return run_id
            self.client.delete_run(run_id)
        parent = found[0]
        if claim:
            owner = _owner(parent)
            if owner is not None:
                raise UserError(
                    f"sweep directory {name} is in use by another sweep, {owner}, which "
                    f"records into parent run {parent.info.run_id}. Give this sweep a "
                    "directory of its own (hydra.sweep.dir=...; resume=true finds the jobs "
                    "that finished in any directory), or wait until that sweep ends."
                )
            self.client.update_run(parent.info.run_id, status="RUNNING")
            tags = [RunTag(k, v) for k, v in _process_tags().items()]
            self.client.log_batch(parent.info.run_id, tags=tags)
        return parent.info.run_id

    def _parents(self, experiments: list[str], sweep_id: str, **kwargs: Any) -> list:
        """The sweep's parent runs in ``experiments``, the earliest first."""
        return self.client.search_runs(
            experiments,
            filter_string=f"tags.{SWEEP_ID} = {quoted(sweep_id)} and tags.{ROLE} = 'sweep'",
            order_by=["attributes.start_time ASC"],
            **kwargs,
        )

    def describe(self, run_id: str, text: str) -> None:
        """Set a run's description, which the UI shows on the run's page (Markdown)."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        self.client.set_tag(run_id, MLFLOW_RUN_NOTE, text)

    def log_file(self, run_id: str, path: Path) -> None:
        """Attach a file to a run, such as a search's best params to its sweep's parent."""
        self.client.log_artifact(run_id, str(path))

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        """End the sweep's parent runs, in every experiment, with the sweep's outcome. A
        parent no run went under, in an experiment where none of the sweep's jobs ran (the
        master config's, when the jobs picked other datasets), is deleted instead, so that
        the UI shows no empty sweep; unless no parent has a run at all."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        experiments = self._all_experiments()
        parents = [parent.info.run_id for parent in self._parents(experiments, sweep_id)]
        used = {
            parent
            for parent in parents
            if self.client.search_runs(
                experiments,
                filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent}'",
                max_results=1,
            )
        }
        for parent in parents:
            if used and parent not in used:
                self.client.delete_run(parent)
            else:
                self._end(parent, outcome)

    @contextmanager
    def open_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = None,
        output_dir: Path | None = None,
    ) -> Iterator[Run]:
        """Start a run and end it on every path: with the outcome the job set when the body
        returns, ``failed`` (with the error) when it raises, ``interrupted`` on Ctrl-C.

        What the store did not take is kept in ``unrecorded.json`` in ``output_dir`` (the
        current directory when None); after a body that returned, :class:`Unrecorded` is
        raised then, so that the caller can exit non-zero."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = dict(tags, **{ROLE: "job"}, **_process_tags())
        if parent_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        created = self.client.create_run(experiment_id, run_name=name, tags=tags)
        run = Run(self.client, created.info.run_id, name, experiment_id)
        where = (output_dir or Path.cwd()) / UNRECORDED_FILE
        try:
            yield run
        except KeyboardInterrupt:
            run.end(INTERRUPTED)
            run.keep_unrecorded(self.uri, where)
            raise
        except Unrecorded:
            # Another run, opened inside this one (several runs of one process), could not
            # be recorded in full: this run has its own outcome.
            run.end(run.outcome)
            run.keep_unrecorded(self.uri, where)
            raise
        except BaseException as error:
            run.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            run.log_text(traceback.format_exc(), "error.txt")
            run.end(FAILED)
            run.keep_unrecorded(self.uri, where)
            raise
        else:
            try:
                run.end(run.outcome)
            except KeyboardInterrupt:
                # A signal while the run's record was being closed: it ends KILLED.
                run.end(INTERRUPTED)
                run.keep_unrecorded(self.uri, where)
                raise
            line = run.keep_unrecorded(self.uri, where)
            if line is not None:
                raise Unrecorded(line)


def _signature(net: Any) -> Any:
    """The model's input and output as MLflow records them, and checks a prediction's
    input against: rows of float32 features in, rows of float32 outputs out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def schema(tensor: Any) -> Schema:
        return Schema([TensorSpec(np.dtype(tensor.dtype), (-1, *tensor.shape[1:]))])

    return ModelSignature(schema(net.inputs[0]), schema(net.outputs[0]))


def _requirements() -> list[str]:
    """What serving a logged model installs: Keras and the backend it was saved on, at the
    versions installed here."""
    from importlib.metadata import PackageNotFoundError, version

    import keras
    import mlflow.keras

    pinned = mlflow.keras.get_default_pip_requirements()
    for package in BACKEND_PACKAGES[keras.backend.backend()]:
        try:
            return [*pinned, f"{package}=={version(package)}"]
        except PackageNotFoundError:
            continue
    return pinned


@dataclass
class Lost:
    """What a run could not write to its store."""

    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    status: str | None = None

    def __bool__(self) -> bool:
        return any((self.metrics, self.params, self.tags, self.inputs, self.artifacts, self.status))

    def summary(self) -> str:
        """``12 metric values, 2 tags, the status FINISHED and the artifact x.png``."""

        def count(items: Sized, noun: str) -> str | None:
            n = len(items)
            return f"{n} {noun}{'s' if n != 1 else ''}" if n else None

        parts = [
            count(self.metrics, "metric value"),
            count(self.params, "param"),
            count(self.tags, "tag"),
            count(self.inputs, "dataset input"),
            f"the status {self.status}" if self.status else None,
            f"the artifact{'s' if len(self.artifacts) > 1 else ''} {', '.join(self.artifacts)}"
            if self.artifacts
            else None,
        ]
        parts = [part for part in parts if part]
        return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


class _Writer:
    """The process's one thread that writes the runs' metrics in the order they were logged,
    so that training does not wait for the store; what a run logs within
    :data:`WRITE_EVERY` seconds goes in one call. One thread for all runs: a fused group
    logs 24 runs at once, and a thread each took more connections than the SQLite store's
    pool holds."""

    _instance: _Writer | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Writer:
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
                    run._write_metrics(batch)
                except Exception:
                    # Whatever went wrong, the thread must live on: runs wait on it to end.
                    log.exception(
                        "could not write %d metric values of run %s", len(batch), run.name
                    )
                    run.lost.metrics.extend(batch)
            for done in flushed:
                done.set()


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

        def write() -> None:
            for start in range(0, len(items), PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=items[start : start + PARAMS_PER_CALL])

        if not self._store(write):
            self.lost.params.update(values)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Queue the metrics for the writer thread; :meth:`end` waits for them."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        self._queued = True
        _Writer.get().put(self, batch)

    def _write_metrics(self, batch: list[Metric]) -> None:
        def write() -> None:
            for start in range(0, len(batch), METRICS_PER_CALL):
                chunk = batch[start : start + METRICS_PER_CALL]
                self.client.log_batch(self.run_id, metrics=chunk)

        if not self._store(write):
            self.lost.metrics.extend(batch)

    def log_inputs(
        self, name: str, source: dict[str, str], splits: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Record each split as an MLflow dataset input (name, source, digest), so the UI
        shows which data a run saw and whether two runs saw the same."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for context, (x, y) in splits.items():
            dataset = mlflow.data.from_numpy(
                x, targets=y, source=CodeDatasetSource(tags=source), name=f"{name}-{context}"
            )
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
            # MLflow's fluent log_input does the same conversion, but only for the active run.
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))

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
        if not self._store(lambda: self.client.log_batch(self.run_id, tags=items)):
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
        import tempfile

        def write() -> None:
            with tempfile.TemporaryDirectory() as staging:
                for path, text in texts.items():
                    Path(staging, path).write_text(text)
                self.client.log_artifacts(self.run_id, staging)

        self._artifact(", ".join(texts), write)

    def log_figure(self, figure: object, path: str) -> None:
        self._artifact(path, lambda: self.client.log_figure(self.run_id, figure, path))

    def log_model(self, net: Any, step: int) -> None:
        """Log the trained Keras model ``net``, as of epoch ``step``, with MLflow's Keras
        flavour: the run's logged model :data:`MODEL`, in the run's experiment, which
        ``mlflow.pyfunc.load_model(f"runs:/{run_id}/model")`` loads.

        Through the run's own client, as everything here: ``mlflow.keras.log_model`` records
        through MLflow's process-wide store and active run, and without an active run puts
        the model in the default experiment, linked to no run. The requirements are given
        rather than inferred, which MLflow does by loading the model in a new process:
        seconds a model."""
        import tempfile

        import mlflow.keras
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from runner.patches import keras_saving_without_tensorflow

        def write() -> None:
            logged = self.client.create_logged_model(
                self.experiment_id, name=MODEL, source_run_id=self.run_id
            )
            try:
                with tempfile.TemporaryDirectory() as staging, keras_saving_without_tensorflow():
                    path = str(Path(staging, MODEL))
                    mlflow.keras.save_model(
                        net,
                        path,
                        mlflow_model=Model(
                            artifact_path=logged.artifact_location,
                            run_id=self.run_id,
                            model_uuid=logged.model_id,
                            model_id=logged.model_id,
                        ),
                        signature=_signature(net),
                        pip_requirements=_requirements(),
                    )
                    self.client.log_model_artifacts(logged.model_id, path)
            except BaseException:
                # The model's record says it never got its files; the run lists it as lost.
                with suppress(Exception):
                    self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
                raise
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step)])

        self._artifact(MODEL, write)

    def _retry(self) -> None:
        """One more try for the params, tags and metrics that a failed store did not take."""
        from mlflow.entities import Param, RunTag

        lost = self.lost
        params = [Param(key, value) for key, value in lost.params.items()]
        tags = [RunTag(key, value) for key, value in lost.tags.items()]
        try:
            for start in range(0, len(params), PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=params[start : start + PARAMS_PER_CALL])
            if tags:
                self.client.log_batch(self.run_id, tags=tags)
            for start in range(0, len(lost.metrics), METRICS_PER_CALL):
                chunk = lost.metrics[start : start + METRICS_PER_CALL]
                self.client.log_batch(self.run_id, metrics=chunk)
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
            _Writer.get().flush(self)
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

    def keep_unrecorded(self, uri: str, path: Path) -> str | None:
        """When part of the run could not be recorded: write it to ``path`` as JSON, log one
        line that says what and where, and return that line; None when nothing was lost."""
        lost = self.lost
        if not lost:
            return None
        why = "; ".join(e for e in (self.fault, self.artifact_error) if e)
        record: dict[str, Any] = {
            "store": uri,
            "run_id": self.run_id,
            "run_name": self.name,
            "error": why,
            "outcome": self.outcome,
            "status": lost.status,
            "params": lost.params,
            "tags": lost.tags,
            "metrics": [
                {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}
                for m in lost.metrics
            ],
            "inputs": lost.inputs,
            "artifacts": lost.artifacts,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))
            kept = f"listed in {path}"
        except OSError as error:
            kept = f"and could not be kept in {path} either ({reason(error)})"
        line = (
            f"run {self.name} ({self.run_id}) is incomplete in {uri}: {lost.summary()} could "
            f"not be recorded ({why}); {kept}"
        )
        log.error("%s", line)
        return line


class Untracked:
    """Stands in for a store when ``tracking.enabled=false``: jobs train and log to the
    console, and nothing is recorded."""

    uri = None

    def experiment(self, name: str) -> str:
        return ""

    def reap_orphans(self) -> list[str]:
        return []

    def sweep_parent(self, *args: object, **kwargs: object) -> None:
        return None

    def finished_run(self, experiment_id: str, fingerprint: str) -> None:
        return None

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        pass

    @contextmanager
    def open_run(self, experiment_id: str, name: str, *args: object, **kwargs: object):
        yield UntrackedRun(name)


class UntrackedRun:
    """A run that records nothing, for :class:`Untracked`."""

    run_id = None

    def __init__(self, name: str):
        self.name = name
        self.outcome = COMPLETED

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_inputs(self, *args: object) -> None:
        pass

    def set_tags(self, tags: dict[str, object]) -> None:
        pass

    def log_text(self, text: str, path: str) -> None:
        pass

    def log_texts(self, texts: dict[str, str]) -> None:
        pass

    def log_figure(self, figure: object, path: str) -> None:
        pass

    def log_model(self, net: object, step: int) -> None:
        pass
