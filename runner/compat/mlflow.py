"""MLflow's internals: many runs' metric histories read in one query, and an empty SQLite
store made as MLflow makes a new one."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from runner.compat import installed, minor, written_for

MLFLOW = ("3.17",)
# The empty store each version makes, as SQLite's dump of it (``mlflow-3.17.sql``):
# replayed, it gives the same tables, indexes, triggers and migration head as MLflow's
# migrations give, without running them. Remade by :func:`dump_empty_store`.
SCHEMAS = Path(__file__).parent
# Run ids per query: well under SQLite's 32,766 bound parameters.
CHUNK = 500


def histories(
    client: Any, run_ids: list[str], key: str
) -> dict[str, list[tuple[int, float]]] | None:
    """Each run's (step, value) of the metric ``key``, for many runs in one query a chunk,
    from the store behind MLflow's ``client``: its SQL store's ``get_metric_history_bulk``,
    which its server answers the UI's charts with. Its client has no public bulk read, and
    one ``get_metric_history`` per run is where a comparison of thousands of runs spends
    its time: SQLite plans that query over every run's values of ``key`` (2,400 runs: 7 ms
    each, against 2 s for the lot in bulk). Fallback, on another store or version: None,
    and the caller reads run by run."""
    if not written_for("mlflow", MLFLOW, "reading metric histories in bulk"):
        return None
    store = client._tracking_client.store
    if not hasattr(store, "get_metric_history_bulk") or not hasattr(store, "engine"):
        return None
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), CHUNK):
        chunk = run_ids[start : start + CHUNK]
        # No bound: every value of each run is wanted.
        for point in store.get_metric_history_bulk(chunk, key, max_results=2**62):
            found[point.run_id].append((point.step, point.value))
    return found


def empty_store(db: Path) -> bool:
    """Make ``db`` a new SQLite store as MLflow's SQL store makes one when it first opens
    it: its tables created, then every one of its migrations run (``_initialize_tables``),
    but without the Default experiment that the store adds next, whose artifact location
    MLflow takes from the directory of the process that opens it. Its client has no public
    way to make the tables alone. Where this version's dump is here (:data:`SCHEMAS`), it
    is replayed instead: the migrations cost more than the rest of a small sweep's start.
    Fallback, on another version: False, and ``db`` is not made."""
    if not written_for("mlflow", MLFLOW, "starting a new store from a kept empty one"):
        return False
    schema = dump_path()
    if schema.is_file():
        with closing(sqlite3.connect(db)) as connection:
            connection.executescript(schema.read_text(encoding="utf-8"))
        return True
    _migrated(db)
    return True


def _migrated(db: Path) -> None:
    """Make ``db`` as MLflow's SQL store does: its tables, then each of its migrations."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(f"sqlite:///{db}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def dump_empty_store() -> Path:
    """Write the dump of the empty store the installed MLflow makes (its migrations run)
    where :func:`empty_store` reads it; return its path. Run once for a new version:
    ``python -c "from runner.compat.mlflow import dump_empty_store; dump_empty_store()"``."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "empty.db"
        _migrated(db)
        with closing(sqlite3.connect(db)) as connection:
            lines = list(connection.iterdump())
    schema = dump_path()
    schema.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return schema


def dump_path() -> Path:
    """Where the dump of the installed MLflow's empty store is kept."""
    return SCHEMAS / f"mlflow-{minor(installed('mlflow'))}.sql"
