"""Opening a new SQLite store: MLflow making it (its tables, then each of its migrations)
against the runner's ``connect``, which starts it as a copy of the empty store kept in the
cache folder, and against ``connect`` with an empty cache folder (a user's first run), which
first makes that kept store (from the dump of MLflow's empty store where the runner has one
for this version, else by MLflow's migrations). Alternated in one process, ``--repeats``
times each, each into a new file, after one of each to fill the OS's file cache and make the
kept store. Every test and every first run in a new folder opens a new store. Prints the
medians and their ratios to MLflow's.

    python bench/new_store.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402

from runner.tracking.store import connect  # noqa: E402


def opened(how, db: Path) -> float:
    """Seconds from nothing to the new store's Default experiment read back."""
    start = time.perf_counter()
    how(f"sqlite:///{db}").get_experiment("0")
    return time.perf_counter() - start


def first(uri: str) -> MlflowClient:
    """``connect`` with an empty cache folder: the kept store is made first."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(dir=os.environ["XDG_CACHE_HOME"])
    try:
        return connect(uri)
    finally:
        os.environ["XDG_CACHE_HOME"] = str(Path(os.environ["XDG_CACHE_HOME"]).parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    ways = {
        "MLflow makes it": MlflowClient,
        "copy of the kept store": connect,
        "first, an empty cache folder": first,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["XDG_CACHE_HOME"] = str(Path(folder) / "cache")
        Path(os.environ["XDG_CACHE_HOME"]).mkdir()
        for i in range(args.repeats + 1):
            for j, (name, how) in enumerate(ways.items()):
                took = opened(how, Path(folder) / f"{i}-{j}.db")
                if i:
                    times[name].append(took)
    medians = {name: statistics.median(each) for name, each in times.items()}
    for name, median in medians.items():
        print(f"{name}: {median * 1000:.0f} ms (median of {args.repeats})")
    mlflow = medians["MLflow makes it"]
    for name in list(medians)[1:]:
        ratio = medians[name] / mlflow
        print(f"{name} / MLflow's: {ratio:.3f} ({1 / ratio:.0f}x faster)")


if __name__ == "__main__":
    main()
