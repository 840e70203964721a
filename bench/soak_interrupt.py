"""Ctrl-C while a fused sweep traces and compiles its first program, on a cold cache.

A fused sweep of 12 jobs in 3 groups (``activation=relu,tanh seed=0,1
'model.units=[32],[16,16],[8]'``, 40 epochs), each try in a new store and with an empty
cache (``XDG_CACHE_HOME``: no kept program, no compiled one), gets SIGINT a delay after
its first group starts ("training 4 models as one"): the delay steps through ``--first``
to ``--last`` seconds, the window in which that group's program is traced, exported and
compiled. Every try must exit 130 with no run left RUNNING; a crash (139, SIGSEGV; -6,
SIGABRT, with C++'s "pure virtual method called" or glibc's "corrupted size") is what it
looks for.

    python bench/soak_interrupt.py [--tries 12] [--first 0.25] [--last 4]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = [
    "-m", "hydra/launcher=fused", "hydra/sweeper=composing", "train.epochs=40",
    "activation=relu,tanh", "seed=0,1", "model.units=[32],[16,16],[8]",
]  # fmt: skip


def running(db: Path) -> int:
    """The runs the store holds RUNNING; 0 when it was never made."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[
            0
        ]


def one(delay: float, folder: Path) -> tuple[int, int, bool]:
    """One try: the exit code, the runs left RUNNING, and whether it crashed."""
    db = folder / "mlflow.db"
    env = dict(
        os.environ, XDG_CACHE_HOME=str(folder / "cache"), MLFLOW_TRACKING_URI=f"sqlite:///{db}"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *SWEEP],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "models as one" in line:
            break
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    output = "".join(seen) + output
    crashed = "pure virtual method called" in output or "corrupted" in output
    return process.returncode, running(db), crashed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=12)
    parser.add_argument("--first", type=float, default=0.25)
    parser.add_argument("--last", type=float, default=4.0)
    args = parser.parse_args()
    codes: collections.Counter[int] = collections.Counter()
    left = aborted = 0
    step = (args.last - args.first) / max(1, args.tries - 1)
    for i in range(args.tries):
        delay = args.first + i * step
        with tempfile.TemporaryDirectory() as folder:
            code, runs, abort = one(delay, Path(folder))
        codes[code] += 1
        left += runs
        aborted += abort
        print(f"SIGINT {delay:4.2f} s in: exit {code}, {runs} run(s) RUNNING", flush=True)
    print(f"exit codes: {dict(codes)}; runs left RUNNING: {left}; crashes: {aborted}")


if __name__ == "__main__":
    main()
