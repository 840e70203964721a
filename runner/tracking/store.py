"""The tracking store: where it is, opening it, and refusing one that cannot be used.

A store is opened once per process and URI (:func:`connect`): a tracking server must
answer its health check, a SQLite file must be a file, writable and not another
application's database, and MLflow creates or migrates a SQLite store's tables under a
file lock, so that two sweeps started at once do not both create them. A new SQLite store
starts as a copy of an empty one, kept in the cache folder (:func:`seed`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runner import backend, compat, stop
from runner.compat import mlflow as compat_mlflow
from runner.config import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# What stands for a password in a store's URI that the runner prints.
MASK = "***"

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORE = ROOT / "mlflow.db"
SQLITE = "sqlite:///"

# Seconds to wait for a tracking server's health answer, or a database's connection,
# before calling it unreachable.
SERVER_TIMEOUT = 5
# The database stores, besides SQLite, that MLflow keeps its runs in.
DATABASES = ("postgresql", "mysql", "mssql")

# MLflow retries a failed HTTP call 7 times with exponential backoff and waits 120 s for an
# answer: minutes per call once a tracking server has gone. The runner gives up after
# seconds instead, and goes on training; a value set in the environment wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

# Tables of MLflow's first schema, which every MLflow store has: a database that has tables
# but not these belongs to another application.
MLFLOW_TABLES = {"experiments", "runs", "metrics", "params", "tags"}
# How many of another application's tables a refusal names.
TABLES_SHOWN = 5


def tracking_uri(configured: str | None) -> str:
    """``tracking.uri`` when given, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite
    file; a SQLite file as an absolute path, a relative one taken from the directory the
    command was started in, so that every job of a sweep writes to the same store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}{DEFAULT_STORE}"
    path = sqlite_text(uri)
    if path is None or Path(path).is_absolute():
        return uri
    start = uri.index(path, len(SQLITE))
    return f"{uri[:start]}{launch_dir() / path}{uri[start + len(path) :]}"


def launch_dir() -> Path:
    """The directory the command was started in: Hydra's, when a job has changed into its
    output directory (``hydra.job.chdir=true``)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


# The SQLite stores that this process has found writable: a sweep's later jobs skip the probe.
_writable: set[str] = set()


def connect(uri: str, adopt_foreign_db: bool = False) -> MlflowClient:
    """MLflow's client of the store a job records in, once the store is known to be usable:
    a server that answers, a SQLite file that is MLflow's (or ``adopt_foreign_db``) and can
    be written. Raises :class:`UserError` saying what is wrong and what to do."""
    reach_server(uri, "drop tracking.uri (and MLFLOW_TRACKING_URI) for the local SQLite store.")
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
        client = open_client(
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
    return client


def reach_server(uri: str, way_out: str) -> None:
    """For a tracking server's ``uri``: put MLflow's HTTP calls under :data:`HTTP_LIMITS`
    for the rest of the process, and fail at once when the server does not answer its
    health check, with a :class:`UserError` ending in ``way_out``; for a database store
    other than SQLite, when the database takes no connection. Nothing for a SQLite store.
    The runner and ``runner.compare`` both come here, so neither waits minutes."""
    if uri.startswith(DATABASES):
        check_database(uri, way_out)
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    # urllib3 announces each retry of each call; the caller says once what failed.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    check_server(uri, way_out)


def check_server(uri: str, way_out: str) -> None:
    """Fail at once, before any training or reading, when a tracking server does not
    answer: MLflow's own client would retry each call with backoff first."""
    import requests

    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as error:
        raise UserError(
            f"tracking server {masked(uri)} is not reachable ({type(error).__name__}). Start it "
            f"(make server runs one on 127.0.0.1:5000), or use another store: {way_out}"
        ) from None


def check_database(uri: str, way_out: str) -> None:
    """Fail at once when a database store (PostgreSQL, MySQL, SQL Server) takes no
    connection within :data:`SERVER_TIMEOUT` seconds: MLflow retries creating its engine
    with backoff for about 100 s first."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        uri, connect_args={"connect_timeout": SERVER_TIMEOUT}, poolclass=sqlalchemy.NullPool
    )
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise UserError(
            f"tracking store {masked(uri)} cannot be reached: "
            f"{reason(getattr(error, 'orig', error))}. Start the database, or use another "
            f"store: {way_out}"
        ) from None
    finally:
        engine.dispose()


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
            f"tracking store {masked(uri)} cannot be created: {problem}. Point tracking.uri (or "
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
            f"tracking store {masked(uri)} cannot be written: "
            f"{reason(getattr(error, 'orig', error))}. "
            "Make the file and its directory writable, or point tracking.uri (or "
            "MLFLOW_TRACKING_URI) at another store."
        ) from None
    finally:
        engine.dispose()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite store, also when the URI names it the way SQLite's
    own URIs do (``sqlite:///file:/path?mode=ro&uri=true``); None for another store or an
    in-memory one."""
    path = sqlite_text(uri)
    return None if path is None else Path(path)


def sqlite_text(uri: str) -> str | None:
    """The database file of a SQLite store as its URI writes it (see :func:`sqlite_path`)."""
    if not uri.startswith(SQLITE):
        return None
    path = uri[len(SQLITE) :]
    if path.startswith("file:") and "uri=true" in path.partition("?")[2].split("&"):
        path = path.removeprefix("file:").partition("?")[0]
    return path if path and path != ":memory:" else None


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
    opened again. A SQLite path that is a directory is refused first, then another
    application's SQLite database, with ``way_out`` as the way out, unless
    ``adopt_foreign_db``: MLflow would add its tables to it without a word. A store that
    cannot be used raises one of :func:`store_errors`."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    # SQLite reports a directory as a "disk I/O error", and the lock would go beside it.
    if db is not None and db.is_dir():
        raise UserError(
            f"tracking store {masked(uri)} is a directory ({db.absolute()}), not a file: a SQLite "
            "store is one file. Name a file in it, such as "
            f"{SQLITE}{db.absolute() / 'mlflow.db'}, an MLflow store or a new one."
        )
    with store_lock(db), stop.held():
        if db is not None and not db.exists() and sqlite_text(uri) == uri[len(SQLITE) :]:
            seed(db)
        if db is not None and not adopt_foreign_db:
            tables = foreign_tables(db)
            if tables:
                shown = ", ".join(tables[:TABLES_SHOWN]) + (
                    ", …" if len(tables) > TABLES_SHOWN else ""
                )
                raise UserError(
                    f"tracking store {masked(uri)} is not an MLflow store: {db} holds another "
                    f"application's tables ({shown}), not MLflow's, and MLflow would add its "
                    f"own among them. {way_out}"
                )
        return MlflowClient(tracking_uri=uri)


def seed(db: Path) -> None:
    """Start the new SQLite store ``db`` as a copy of :func:`kept_store`: MLflow then finds
    its tables made and its schema current, and only adds its Default experiment, as it
    does to a store it made itself. Making the tables runs each of MLflow's migrations,
    which costs more than the rest of opening the store; copying them does not. The copy
    is written beside ``db`` and linked to its name only while nothing is there, so a store
    is never half written or written over; where that fails, ``db`` is left absent and
    MLflow makes it."""
    kept = kept_store()
    if kept is None:
        return
    partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(kept, partial)
        os.link(partial, db)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            partial.unlink(missing_ok=True)


def kept_store() -> Path | None:
    """An empty SQLite store as MLflow makes one, kept in the cache folder per MLflow
    version (``stores/``) and made on first need (:func:`runner.compat.mlflow.empty_store`);
    None when it cannot be made or kept."""
    kept = backend.cache_dir() / "stores" / f"mlflow-{compat.installed('mlflow')}.db"
    if kept.is_file():
        return kept
    partial = kept.with_name(f"{kept.name}.{os.getpid()}.partial")
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        if compat_mlflow.empty_store(partial):
            os.replace(partial, kept)
    except store_errors():
        return None
    finally:
        with suppress(OSError):
            partial.unlink(missing_ok=True)
    return kept if kept.is_file() else None


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
        f"tracking store {masked(uri)} cannot be used: {text}. Point tracking.uri (or "
        "MLFLOW_TRACKING_URI) at an MLflow store, or at a new file to start one."
    )


def masked(uri: str) -> str:
    """A store's ``uri`` with its password, before the host or in the query, as
    :data:`MASK`; a URI without one as it is (a SQLite path's slashes included)."""
    parts = urlsplit(uri)
    user, at, host = parts.netloc.rpartition("@")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if ":" not in user and all(key != "password" for key, _ in query):
        return uri
    if ":" in user:
        user = f"{user.partition(':')[0]}:{MASK}"
    if any(key == "password" for key, _ in query):
        masked_query = [(key, MASK if key == "password" else value) for key, value in query]
        parts = parts._replace(query=urlencode(masked_query, safe="*"))
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}"))
