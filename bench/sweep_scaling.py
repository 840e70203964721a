"""Fused sweeps of growing size, each a whole ``python -m runner -m ...`` process: wall time,
peak memory, and where the time goes.

The sweep: 4 activations x 2 losses x 5 learning rates x seeds on digits, hidden [128, 64],
20 epochs, the default launcher (fused) into a fresh SQLite store; ``--jobs 24,240,2400``
(the default) takes 3, 6 and 60 seeds, and one learning rate (0.001) where the jobs do not
fill five. CPU is the sweep's processes' user and system time. Peak memory is the largest
resident memory of the sweep's process tree, sampled every 0.2 s from /proc (Linux). The
parts come from the log's timestamps: start and compose (to Hydra's "Launching"), plan
and open (to each group's "training N models as one"), compile and train (the engine's
own line per group), then the writer's record and the sweep's table (to the end). Each
run must end FINISHED.

With ``--ui``, the largest sweep's link is then opened as a user would: ``mlflow server``
over its store, the link the sweep printed, read by headless Chromium (as
tests/test_ui.py does); timed from the request to the page's text, which must name the
sweep's parent run.

    python bench/sweep_scaling.py [--jobs 24,240,2400] [--epochs 20] [--ui]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
COMPILED = re.compile(r"trained (\d+) model\(s\) on \w+: ([\d.]+) s compiling, then ([\d.]+) ms")


def tree_rss(root: int) -> int:
    """The resident bytes of ``root`` and every process below it."""
    parents, rss = {}, {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(stat[1])
            rss[int(entry.name)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, below = 0, [root]
    while below:
        pid = below.pop()
        total += rss.get(pid, 0)
        below += [child for child, parent in parents.items() if parent == pid]
    return total


def when(line: str) -> float | None:
    found = STAMP.match(line)
    if found is None:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parts(lines: list[str], start: float, end: float) -> dict[str, float]:
    """The sweep's wall time by part, from its log's timestamps. A group that memory splits
    into batches logs one "trained" line a batch: the group trains from its own line to
    its last batch's."""
    launched = next(when(line) for line in lines if "Launching" in line)
    planning = training = compiling = 0.0
    previous, group = launched, None
    for line in lines:
        if "models as one" in line:
            group = when(line)
            planning += group - previous
        elif found := COMPILED.search(line):
            compiling += float(found.group(2))
            training += when(line) - (previous if previous > (group or 0) else group)
            previous = when(line)
    return {
        "start + compose": launched - start,
        "plan + open": planning,
        "compile": compiling,
        "train": training - compiling,
        "record + table": end - previous,
    }


RATES = (0.0003, 0.001, 0.003, 0.01, 0.03)


def ui_seconds(store: str, lines: list[str], folder: Path) -> float:
    """How long the sweep's link takes to render in headless Chromium, served by ``mlflow
    server`` over ``store``."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import mlflow_server
    from tests.test_ui import find_browser, rendered_text

    link = next(line for line in lines if "the sweep in the MLflow UI" in line).split()[-1]
    with mlflow_server(store, folder / "artifacts") as (uri, _):
        url = uri + link[link.index("/#/") :]
        start = time.time()
        page = "\n".join(rendered_text(find_browser(), url, folder / "profile"))
        seconds = time.time() - start
    if url.split("/runs/")[1].split("?")[0] not in page:
        raise SystemExit(f"the page of {url} does not name its run:\n{page[:2000]}")
    return seconds


def sweep(jobs: int, epochs: int, folder: Path, ui: bool = False) -> dict[str, float]:
    rates = RATES if jobs % (8 * len(RATES)) == 0 else (0.001,)
    seeds = jobs // (8 * len(rates))
    store = f"sqlite:///{folder / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(store).search_experiments()
    command = [
        sys.executable, "-m", "runner", "-m", f"hydra.sweep.dir={folder / 'sweep'}",
        "activation=sigmoid,tanh,relu,elu", "loss=mse,categorical_crossentropy",
        f"optimizer.learning_rate={','.join(map(str, rates))}",
        f"seed={','.join(map(str, range(seeds)))}", "model.units=[128,64]",
        f"train.epochs={epochs}",
    ]  # fmt: skip
    log = folder / "log.txt"
    start = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(os.environ, MLFLOW_TRACKING_URI=store), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.2)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    lines = log.read_text().splitlines()
    if process.returncode != 0:
        raise SystemExit("\n".join(lines[-40:]))
    runs = MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()],
        "tags.role = 'job'",
        max_results=50000,
    )
    finished = sum(run.info.status == "FINISHED" for run in runs)
    row = {"jobs": 8 * len(rates) * seeds, "finished": finished, "wall": end - start,
           "cpu": cpu, "peak": peak, **parts(lines, start, end)}  # fmt: skip
    if ui:
        row["ui"] = ui_seconds(store, lines, folder)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="24,240,2400")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ui", action="store_true", help="time the largest sweep's UI page")
    args = parser.parse_args()
    rows = []
    sizes = list(map(int, args.jobs.split(",")))
    for jobs in sizes:
        with tempfile.TemporaryDirectory() as folder:
            row = sweep(jobs, args.epochs, Path(folder), args.ui and jobs == max(sizes))
        rows.append(row)
        print(row, flush=True)
    names = ["start + compose", "plan + open", "compile", "train", "record + table"]
    print("\n| jobs | finished | wall | CPU | per job | peak memory | " + " | ".join(names) + " |")
    print("| ---: " * (6 + len(names)) + "|")
    for row in rows:
        cells = [f"{row['jobs']}", f"{row['finished']}", f"{row['wall']:.1f} s",
                 f"{row['cpu']:.1f} s",
                 f"{row['wall'] / row['jobs'] * 1000:.0f} ms", f"{row['peak'] / 2**30:.2f} GiB",
                 *(f"{row[n]:.1f} s" for n in names)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if "ui" in row:
            print(f"the {row['jobs']}-job sweep's page rendered in {row['ui']:.1f} s")
    for small, large in zip(rows, rows[1:], strict=False):
        marginal = (large["wall"] - small["wall"]) / (large["jobs"] - small["jobs"])
        print(
            f"marginal cost of a job, {small['jobs']} to {large['jobs']}: {marginal * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
