"""The cost of a small fused sweep, as a new user runs it: where its wall time goes, cold
and warm, and which parts the kept programs and JAX's persistent cache remove.

The sweep: ``python -m runner -m activation=relu,tanh,sigmoid seed=0,1,2 train.epochs=5``
(9 jobs, one fused group of 3 families), each time a whole process, in four states of the
cache folder (``XDG_CACHE_HOME``), each into a fresh SQLite store, then once more warm into
the store the warm sweep made:

- cold: an empty folder, no kept program and no compiled one;
- compiled nothing: no kept program and no compiled one, but the kept empty MLflow store
  and matplotlib's font list, which a cache folder makes once: a user's first sweep of a
  new model;
- kept programs: the traced programs kept, JAX's persistent compilation cache emptied;
- warm: both kept, as after a user's earlier sweep, into a new store (MLflow creates its
  tables);
- warm, store kept: the same, into the store of the warm sweep before it, as a user's next
  sweep in the same folder.

Beside them, the floors the targets are measured against: the same sweep untracked
(``tracking.enabled=false``: no MLflow import, no store, no table), cold and warm, and the
process any Keras-on-JAX program pays (``import keras, jax.numpy``, ``jnp.ones(3)``).

Parts, from the log's timestamps (as in sweep_scaling.py): start and compose, plan and
open, compile (the engine's own figure), train, record and table. Inside compiling, JAX's
own durations (``jax.monitoring``): tracing to a jaxpr, lowering to MLIR, XLA's compile,
and the persistent cache's hits. Each state runs ``--repeats`` times in turn; medians.

    python bench/small_sweep.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_run import FLOOR  # noqa: E402
from sweep_scaling import COMPILED, parts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["-m", "activation=relu,tanh,sigmoid", "seed=0,1,2", "train.epochs=5"]
# Runs the runner as ``python -m runner`` does, summing JAX's compile events on the way. The
# listeners are added once the runner imports JAX: imported here first, JAX would start
# before the sweep's tracking process does, which imports MLflow while JAX starts.
WATCHED = """
import atexit, collections, importlib.machinery, json, runpy, sys
seconds, counts = collections.Counter(), collections.Counter()
def duration(event, secs, **_):
    seconds[event.rsplit("/", 1)[-1]] += secs
def event(name, **_):
    counts[name.rsplit("/", 1)[-1]] += 1
class Watch:
    def find_spec(self, name, path, target=None):
        if name != "jax._src.monitoring":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.register_event_duration_secs_listener(duration)
            module.register_event_listener(event)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Watch())
atexit.register(lambda: print("JAX " + json.dumps({**seconds, **counts}), file=sys.__stderr__))
sys.argv = ["runner", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""
STATES = (
    "cold",
    "compiled nothing",
    "kept programs",
    "warm",
    "warm, store kept",
    "cold, untracked",
    "warm, untracked",
    "imports only",
)
UNTRACKED = ["tracking.enabled=false"]
JAX_PARTS = {
    "trace": "jaxpr_trace_duration",
    "lower": "jaxpr_to_mlir_module_duration",
    "XLA": "backend_compile_duration",
}


def run(cache: Path, folder: Path, stored: Path, extra: list[str]) -> dict[str, float]:
    """One sweep with ``cache`` as its cache folder, its jobs' folders under ``folder``, into
    the store in ``stored`` (new or not), with the overrides ``extra``."""
    store = f"sqlite:///{stored / 'mlflow.db'}"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), MLFLOW_TRACKING_URI=store)
    command = [sys.executable, "-c", WATCHED, *SWEEP, *extra, f"hydra.sweep.dir={folder / 'sweep'}"]
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    lines = (done.stdout + done.stderr).splitlines()
    if not any(COMPILED.search(line) for line in lines):
        raise SystemExit("no compile line in the sweep's log:\n" + "\n".join(lines[-30:]))
    watched = json.loads(next(line[4:] for line in lines if line.startswith("JAX ")))
    row = {"wall": end - start, **parts(lines, start, end)}
    row.update({name: watched.get(key, 0.0) for name, key in JAX_PARTS.items()})
    row["cache hits"] = watched.get("cache_hits", 0)
    return row


def floor() -> dict[str, float]:
    """The wall time of the process any Keras-on-JAX program pays."""
    env = dict(os.environ, KERAS_BACKEND="jax")
    start = time.time()
    subprocess.run([sys.executable, "-c", FLOOR], env=env, check=True, capture_output=True)
    return {"wall": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--states",
        type=lambda text: [s.strip() for s in text.split(";")],
        default=list(STATES),
        help="the states to run, separated by ';' (all by default): " + "; ".join(STATES),
    )
    args = parser.parse_args()
    unknown = set(args.states) - set(STATES)
    if unknown:
        parser.error(f"unknown states {sorted(unknown)}; allowed: {'; '.join(STATES)}")
    if "warm, store kept" in args.states and "warm" not in args.states:
        parser.error("the state 'warm, store kept' records into the store of 'warm': run both")
    rows: dict[str, list[dict[str, float]]] = {state: [] for state in args.states}
    with tempfile.TemporaryDirectory() as top:
        cache = Path(top) / "cache"
        for repeat in range(args.repeats):
            for state in args.states:
                if state.startswith("cold"):
                    shutil.rmtree(cache, ignore_errors=True)
                elif state == "compiled nothing":
                    # JAX's and the runner's programs gone; the kept empty store and
                    # matplotlib's font list, made once a cache folder, stay.
                    for compiled in ("jax", "programs"):
                        shutil.rmtree(cache / "actlab" / compiled, ignore_errors=True)
                elif state == "kept programs":
                    shutil.rmtree(cache / "actlab" / "jax", ignore_errors=True)
                folder = Path(top) / f"{repeat}-{state.replace(' ', '-').replace(',', '')}"
                folder.mkdir()
                stored = Path(top) / f"{repeat}-warm" if state == "warm, store kept" else folder
                extra = UNTRACKED if state.endswith("untracked") else []
                found = floor() if state == "imports only" else run(cache, folder, stored, extra)
                rows[state].append(found)
                print(state, {k: round(v, 2) for k, v in rows[state][-1].items()}, flush=True)
    names = max((list(found[0]) for found in rows.values()), key=len)
    print("\n| cache | " + " | ".join(names) + " |")
    print("| --- " + "| ---: " * len(names) + "|")
    for state, found in rows.items():
        cells = [
            f"{statistics.median(r[name] for r in found):.2f}" if name in found[0] else ""
            for name in names
        ]
        print(f"| {state} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
