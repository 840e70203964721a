"""``python -m runner.compare`` against a real SQLite MLflow store, built run by run with
``MlflowClient``: two sweeps and one run outside them, with known metrics and outcomes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from statistics import mean, stdev

import pandas as pd
import pytest
from matplotlib.image import imread
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from runner.compare import main, summarize, sweep_runs
from runner.compare.table import curves
from runner.metrics import lower_is_better
from runner.tracking import STATUS

LATEST = "multirun/2026-11-27/07-51-12"
OLDER = "multirun/2026-11-26/18-00-00"
LATEST_ID = f"/home/user/actlab/{LATEST}"
OLDER_ID = f"/home/user/actlab/{OLDER}"
CCE = "categorical_crossentropy"
EPOCHS = 3
FILES = {"comparison.md", "comparison.csv", "comparison.png"}

# The latest sweep's jobs: activation, loss, seed, outcome, test_accuracy (None: not logged).
# The diverged run's 0.10 must stay out of every mean.
LATEST_JOBS = [
    ("relu", "mse", 0, "completed", 0.90),
    ("relu", "mse", 1, "completed", 0.92),
    ("relu", "mse", 2, "completed", 0.94),
    ("relu", CCE, 0, "completed", 0.95),
    ("relu", CCE, 1, "completed", 0.97),
    ("relu", CCE, 2, "diverged", 0.10),
    ("sigmoid", "mse", 0, "completed", 0.60),
    ("sigmoid", "mse", 1, "failed", None),
    ("sigmoid", CCE, 0, "completed", 0.80),
    ("sigmoid", CCE, 1, "completed", 0.84),
    ("sigmoid", CCE, 2, "interrupted", None),
]
OLDER_JOBS = [
    ("tanh", CCE, 0, "completed", 0.70),
    ("tanh", CCE, 1, "completed", 0.80),
    ("relu", CCE, 0, "completed", 0.90),
]
# A single run of the digits experiment, outside any sweep.
LONE_JOB = ("tanh", "mse", 0, "completed", 0.50)
FIELDS = ("activation", "loss", "seed", "outcome", "value")
# The columns worked out per group alone, then those measured against the best group.
COUNTED = ["mean", "std", "min", "max", "ci_low", "ci_high", "n", "diverged", "failed"]
COUNTED.append("interrupted")
COLUMNS = [
    *COUNTED,
    "diff",
    "diff_low",
    "diff_high",
    "test",
    "verdict",
    "rank",
]


def grad_norm(activation: str, seed: int) -> float:
    """The last ``grad_norm/hidden_0`` of a job: relu's gradients are ten times sigmoid's."""
    return (0.5 if activation == "relu" else 0.05) * (1 + seed / 5)


def add_job(
    client: MlflowClient,
    experiment_id: str,
    job: tuple[str, str, int, str, float | None],
    dataset: str,
    parent: tuple[str, str] | None,
    start: int,
    params: dict | None = None,
    validation: float | None = None,
) -> None:
    """Record one job as the runner does: params (``params`` added to or replacing the
    usual ones), per-epoch metrics (step = epoch) whose validation accuracy climbs to
    ``validation`` (default: the test accuracy), the final metrics when it got there, the
    tags and the status of its outcome."""
    activation, loss, seed, outcome, accuracy = job
    tags = {"role": "job", "outcome": outcome}
    if parent is not None:
        tags |= {"sweep_id": parent[0], "mlflow.parentRunId": parent[1]}
    run = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{activation}-{loss}-s{seed}"
    )
    params = {
        "activation": activation,
        "loss": loss,
        "seed": seed,
        "dataset": dataset,
        "optimizer": "adam",
        "optimizer.learning_rate": 0.001,
        "model.units": "[64, 64]",
        **(params or {}),
    }
    metrics = []
    if outcome != "failed":
        # An interrupted job got through one epoch; the others through all of them.
        last = validation or (accuracy if accuracy is not None else 0.3)
        epochs = 1 if outcome == "interrupted" else EPOCHS
        for step in range(epochs):
            val_accuracy = last * (step + 1) / EPOCHS
            metrics.append(Metric("val_accuracy", val_accuracy, start, step))
            metrics.append(Metric("val_loss", 1 - val_accuracy, start, step))
            metrics.append(Metric("grad_norm/hidden_0", grad_norm(activation, seed), start, step))
    if accuracy is not None:
        metrics += [Metric("test_accuracy", accuracy, start, 0)]
        metrics += [Metric("test_loss", 1 - accuracy, start, 0)]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, status=STATUS[outcome], end_time=start + 1000)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store with the latest sweep (digits), an older one (iris) recorded after it, so
    that only the start times tell which is the latest, and a lone digits run. Returns the
    store's URI and the parents' run ids."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    ids = {"uri": uri}
    for name, sweep_id, dataset, jobs, start in [
        (LATEST, LATEST_ID, "digits", LATEST_JOBS, 1_800_000_000_000),
        (OLDER, OLDER_ID, "iris", OLDER_JOBS, 1_700_000_000_000),
    ]:
        experiment = client.get_experiment_by_name(dataset)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(
                dataset, artifact_location=(root / "mlartifacts" / dataset).as_uri()
            )
        )
        parent = client.create_run(
            experiment_id,
            start_time=start,
            run_name=name,
            tags={"role": "sweep", "sweep_id": sweep_id},
        )
        ids[name] = parent.info.run_id
        for i, job in enumerate(jobs):
            add_job(client, experiment_id, job, dataset, (sweep_id, parent.info.run_id), start + i)
        client.set_terminated(parent.info.run_id, end_time=start + 100_000)
    digits = client.get_experiment_by_name("digits").experiment_id
    add_job(client, digits, LONE_JOB, "digits", None, 1_900_000_000_000)
    return ids


@pytest.fixture(scope="module")
def latest(
    sweeps: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """``main`` run once with its defaults on the store: its output folder, stdout, stderr."""
    out = tmp_path_factory.mktemp("latest")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        assert main(["--uri", sweeps["uri"], "--out", str(out)]) == 0
    return out, stdout.getvalue(), stderr.getvalue()


def compare(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``main`` in process; its exit code, stdout and stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected(jobs: list[tuple], by: list[str]) -> pd.DataFrame:
    """The comparison of ``jobs`` grouped by ``by``, worked out with the standard library
    and scipy: statistics over completed jobs, the mean's Student-t interval from 3 of them,
    every other outcome counted."""
    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        fields = dict(zip(FIELDS, job, strict=True))
        groups.setdefault(tuple(fields[k] for k in by), []).append(fields)
    rows = []
    for group, members in groups.items():
        values = [job["value"] for job in members if job["outcome"] == "completed"]
        count = {o: sum(job["outcome"] == o for job in members) for o in STATUS}
        low, high = (
            scipy_stats.t.interval(0.95, len(values) - 1, mean(values), scipy_stats.sem(values))
            if len(values) >= 3
            else (float("nan"), float("nan"))
        )
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "mean": mean(values),
                "std": stdev(values) if len(values) > 1 else float("nan"),
                "min": min(values),
                "max": max(values),
                "ci_low": low,
                "ci_high": high,
                "n": count["completed"],
                "diverged": count["diverged"],
                "failed": count["failed"],
                "interrupted": count["interrupted"],
            }
        )
    return pd.DataFrame(rows).set_index(by)


def read_csv(out: Path, by: list[str]) -> pd.DataFrame:
    """``comparison.csv`` indexed by its group columns, like :func:`expected`."""
    table = pd.read_csv(out / "comparison.csv")
    assert list(table.columns) == [*by, *COLUMNS]
    return table.set_index(by)


def assert_summarizes(table: pd.DataFrame, jobs: list[tuple]) -> None:
    """The CSV's numbers of each group alone are those of :func:`expected` for ``jobs``."""
    want = expected(jobs, list(table.index.names)).loc[table.index]
    pd.testing.assert_frame_equal(table[COUNTED], want, check_dtype=False)


def test_the_latest_sweep_by_the_params_that_vary(sweeps, latest):
    folder, out, _ = latest
    table = read_csv(folder, ["activation", "loss"])
    assert_summarizes(table, LATEST_JOBS)
    # The CSV holds the very numbers of the table in memory, to the last bit.
    in_memory = summarize(sweep_runs(sweeps["uri"], LATEST_ID)).set_index(["activation", "loss"])
    pd.testing.assert_frame_equal(table, in_memory, check_dtype=False, check_exact=True)
    order = [("relu", CCE), ("relu", "mse"), ("sigmoid", CCE), ("sigmoid", "mse")]
    assert table.index.tolist() == order
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table.loc[("relu", CCE), ["mean", "std", "n", "diverged"]].tolist() == pytest.approx(
        [0.96, 0.0141421356, 2, 1]
    )
    assert pd.isna(table.loc[("sigmoid", "mse"), "std"])
    assert out.splitlines()[0] == f"sweep {LATEST}: 11 runs, test_accuracy (higher is better)"
    assert "test_accuracy mean ± std" in out
    assert [tuple(line.split()[:2]) for line in out.splitlines()[2:6]] == order
    assert "95% CI" in out.splitlines()[1]
    # The best group has 2 runs: no interval, so no verdict against it either.
    assert out.splitlines()[6] == (
        f"relu · {CCE} has the best mean, 0.0400 ahead of relu · mse, but at n = 2 and 3 there "
        "is no 95% CI (n < 3) to say whether that is more than noise."
    )


def test_the_markdown_names_the_sweep_and_holds_the_same_table(latest):
    lines = (latest[0] / "comparison.md").read_text().splitlines()
    assert lines[0] == f"sweep {LATEST}: 11 runs, `test_accuracy` (higher is better)"
    assert lines[2] == (
        "| activation | loss | test_accuracy mean ± std | 95% CI | min | max | n | diverged "
        "| failed | interrupted | vs best, 95% CI | test | verdict | rank |"
    )
    assert lines[3] == (
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- "
        "| ---: |"
    )
    assert lines[4] == (
        f"| relu | {CCE} | 0.9600 ± 0.0141 | n < 3 | 0.9500 | 0.9700 | 2 | 1 | 0 | 0 | — | — "
        "| best | 1 |"
    )
    # Three runs: mean 0.92, sd 0.02, ± t(0.975, 2) 4.3027 × 0.02 / √3. Its seeds are not the
    # best group's (seed 2 diverged there), so the difference is Welch's.
    assert lines[5] == (
        "| relu | mse | 0.9200 ± 0.0200 | [0.8703, 0.9697] | 0.9000 | 0.9400 | 3 | 0 | 0 | 0 "
        "| −0.0400 (n < 3) | Welch | n < 3 | 2 |"
    )
    assert lines[6].endswith("| −0.1400 (n < 3) | paired by seed | n < 3 | 3 |")
    assert lines[7] == (
        "| sigmoid | mse | 0.6000 | n < 3 | 0.6000 | 0.6000 | 1 | 0 | 1 | 0 | −0.3600 (n < 3) "
        "| Welch | n < 3 | 4 |"
    )
    assert lines[9].startswith(f"relu · {CCE} has the best mean, 0.0400 ahead of relu · mse")
    assert len(lines) == 10


def test_the_figure_is_a_png_and_its_curves_average_the_completed_seeds(sweeps, latest):
    height, width, _ = imread(latest[0] / "comparison.png").shape
    assert width > 1000 and height > 400
    runs = sweep_runs(sweeps["uri"], LATEST_ID)
    curve = curves(sweeps["uri"], runs, ["activation", "loss"], "val_accuracy")
    # Seeds 0 and 1 completed; the diverged seed 2 (0.10) is left out.
    assert curve.loc[f"relu · {CCE}"].tolist() == pytest.approx([0.96 / 3, 0.96 * 2 / 3, 0.96])
    # The interrupted run's one epoch is not averaged in either.
    assert curve.loc[f"sigmoid · {CCE}"].tolist() == pytest.approx([0.82 / 3, 0.82 * 2 / 3, 0.82])
    assert sorted(curve.index.get_level_values(0).unique()) == [
        f"relu · {CCE}",
        "relu · mse",
        f"sigmoid · {CCE}",
        "sigmoid · mse",
    ]


def test_the_files_are_logged_to_the_sweeps_parent_only(sweeps, latest, tmp_path):
    folder, _, err = latest
    assert err.strip().endswith(f"; logged to parent run {sweeps[LATEST]}")
    client = MlflowClient(tracking_uri=sweeps["uri"])
    logged = {Path(f.path).name for f in client.list_artifacts(sweeps[LATEST], "comparison")}
    assert logged == FILES
    downloaded = client.download_artifacts(sweeps[LATEST], "comparison/comparison.csv", tmp_path)
    assert Path(downloaded).read_text() == (folder / "comparison.csv").read_text()


@pytest.mark.parametrize("sweep", [OLDER, OLDER_ID], ids=["name", "id"])
def test_sweep_picks_a_sweep_by_name_or_id(sweeps, tmp_path, capsys, sweep):
    code, out, err = compare(
        capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), "--sweep", sweep
    )
    assert code == 0, err
    assert out.startswith(f"sweep {OLDER}: 3 runs")
    table = read_csv(tmp_path, ["activation"])
    assert table.index.tolist() == ["relu", "tanh"]
    assert table["mean"].tolist() == pytest.approx([0.90, 0.75])
    assert table["n"].tolist() == [1, 2]
    assert f"logged to parent run {sweeps[OLDER]}" in err


def test_experiment_takes_all_its_job_runs_sweep_or_not(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--experiment", "digits"]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    assert out.startswith("experiment digits: 12 runs")
    table = read_csv(tmp_path, ["activation", "loss"])
    assert_summarizes(table, [*LATEST_JOBS, LONE_JOB])
    assert "logged" not in err


def test_filter_narrows_the_sweep_and_the_grouping_follows(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--filter", "params.loss = 'mse'"]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    assert "filter params.loss = 'mse'" in out.splitlines()[0]
    table = read_csv(tmp_path, ["activation"])
    mse = [job for job in LATEST_JOBS if job[1] == "mse"]
    assert_summarizes(table, mse)


def test_by_groups_over_the_other_params(sweeps, tmp_path, capsys):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--by", "activation"]
    assert compare(capsys, *args)[0] == 0
    table = read_csv(tmp_path, ["activation"])
    assert_summarizes(table, LATEST_JOBS)
    assert table.loc["relu", ["n", "diverged"]].tolist() == [5, 1]
    assert table.loc["sigmoid", ["n", "failed", "interrupted"]].tolist() == [3, 1, 1]


@pytest.mark.parametrize(
    "args,ranking",
    [
        # Lower is better for a loss: the same order as accuracy.
        (["--metric", "test_loss"], ["relu·cce", "relu·mse", "sigmoid·cce", "sigmoid·mse"]),
        # A diagnostic is higher-is-better unless told otherwise.
        (
            ["--metric", "grad_norm/hidden_0"],
            ["relu·mse", "relu·cce", "sigmoid·cce", "sigmoid·mse"],
        ),
        (
            ["--metric", "grad_norm/hidden_0", "--lower-is-better"],
            ["sigmoid·mse", "sigmoid·cce", "relu·cce", "relu·mse"],
        ),
        (
            ["--metric", "test_loss", "--no-lower-is-better"],
            ["sigmoid·mse", "sigmoid·cce", "relu·mse", "relu·cce"],
        ),
    ],
)
def test_metric_and_direction_set_the_ranking(sweeps, tmp_path, capsys, args, ranking):
    code, out, _ = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 0
    table = pd.read_csv(tmp_path / "comparison.csv")
    names = [
        f"{a}·{'cce' if loss == CCE else loss}"
        for a, loss in zip(table.activation, table.loss, strict=True)
    ]
    assert names == ranking
    assert table["rank"].tolist() == [1, 2, 3, 4]
    if "grad_norm/hidden_0" in args:
        # relu · mse's seeds 0, 1, 2 end at 0.5, 0.6 and 0.7.
        assert table.set_index(["activation", "loss"]).loc[
            ("relu", "mse"), "mean"
        ] == pytest.approx(0.6)
        assert "grad_norm/hidden_0 mean ± std" in out


@pytest.mark.parametrize(
    "metric,lower",
    [
        ("test_loss", True),
        ("val_rmse", True),
        ("mae", True),
        ("train_seconds", True),
        ("test_accuracy", False),
        ("grad_norm/hidden_0", False),
        ("dead_fraction/hidden_0", False),
    ],
)
def test_lower_is_better_for_losses_errors_and_times(metric, lower):
    assert lower_is_better(metric) is lower


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--sweep", "multirun/nope"],
            f"no sweep 'multirun/nope' in sqlite:///STORE; the latest: {LATEST}, {OLDER}",
        ),
        (["--metric", "nope"], f"no metric 'nope' in the runs of sweep {LATEST}; metrics: "),
        (
            ["--metric", "nope"],
            "grad_norm/hidden_0, test_accuracy, test_loss, val_accuracy, val_loss",
        ),
        (["--by", "nope"], f"no param nope in the runs of sweep {LATEST}; params: activation, "),
        (["--experiment", "nope"], "no experiment 'nope' in sqlite:///STORE; experiments: "),
        (["--filter", "params.loss = 'huber'"], "no job runs matching \"params.loss = 'huber'\""),
        (["--filter", "params.loss ="], "cannot search sqlite:///STORE for tags.role = 'job' and"),
    ],
)
def test_what_cannot_be_compared_is_one_line_and_exit_2(sweeps, tmp_path, capsys, args, message):
    code, out, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("compare: ")
    assert message.replace("sqlite:///STORE", sweeps["uri"]) in err
    assert out == ""
    assert not (tmp_path / "comparison.csv").exists()


def test_a_missing_or_empty_store_exits_2(store, tmp_path, capsys):
    code, _, err = compare(capsys, "--uri", store, "--out", str(tmp_path))
    assert code == 2
    db = tmp_path / "mlflow.db"
    assert err == f"compare: no MLflow store at {db}: run a job or a sweep first (make sweep)\n"
    MlflowClient(tracking_uri=store).search_experiments()
    capsys.readouterr()  # MLflow's own log lines as it creates the tables
    code, _, err = compare(capsys, "--uri", store, "--out", str(tmp_path))
    assert code == 2
    assert err.startswith(f"compare: no sweep in {store}: run one (make sweep)")


def test_a_corrupt_store_is_one_line_and_exit_2_and_is_left_as_it_was(tmp_path, capsys):
    junk = bytes(range(256)) * 20
    path = tmp_path / "corrupt.db"
    path.write_bytes(junk)
    uri = f"sqlite:///{path}"
    code, out, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err.startswith(f"compare: tracking store {uri} cannot be used: DatabaseError: ")
    assert "file is not a database" in err and err.count("\n") == 1
    assert path.read_bytes() == junk


@pytest.mark.parametrize("under", [False, True], ids=["file", "under a file"])
def test_an_out_that_is_a_file_is_one_line_and_exit_2(sweeps, tmp_path, capsys, under):
    path = tmp_path / "taken"
    path.write_text("mine")
    out = path / "comparison" if under else path
    code, stdout, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(out))
    assert code == 2 and stdout == ""
    what = f"cannot be made: {path} is a file" if under else "is a file"
    assert err == (
        f"compare: --out {out} {what}, not a directory. Give a directory, existing or new, "
        "for the comparison's files.\n"
    )
    assert path.read_text() == "mine"


def test_a_sweep_whose_directory_holds_quotes_and_non_ascii_is_compared(tmp_path, capsys):
    # MLflow's filters have no escapes: each id must reach the store as it is.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    artifacts = (tmp_path / "mlartifacts").as_uri()
    experiment_id = client.create_experiment("digits", artifact_location=artifacts)
    for i, sweep_id in enumerate(["/runs/it's a\\b dïr ωμέγα", '/runs/say "hi"']):
        start = 1_800_000_000_000 + i * 1000
        parent = client.create_run(
            experiment_id,
            start_time=start,
            run_name=sweep_id,
            tags={"role": "sweep", "sweep_id": sweep_id},
        )
        jobs = [("relu", "mse", seed, "completed", 0.9) for seed in range(i + 2)]
        for j, job in enumerate(jobs):
            add_job(client, experiment_id, job, "digits", (sweep_id, parent.info.run_id), start + j)
        assert len(sweep_runs(uri, sweep_id)) == len(jobs)
        code, out, err = compare(capsys, "--uri", uri, "--out", str(tmp_path / f"out{i}"))
        assert code == 0, err
        assert out.startswith(f"sweep {sweep_id}: {len(jobs)} runs, test_accuracy")


def test_python_m_runner_compare_writes_into_comparison_under_the_cwd(sweeps, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=sweeps["uri"])
    result = subprocess.run(
        [sys.executable, "-m", "runner.compare", "--by", "loss"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == f"sweep {LATEST}: 11 runs, test_accuracy (higher is better)"
    )
    assert {p.name for p in (tmp_path / "comparison").iterdir()} == FILES
    table = pd.read_csv(tmp_path / "comparison" / "comparison.csv")
    assert table["loss"].tolist() == [CCE, "mse"]
    assert table["n"].tolist() == [4, 4]


def test_step_takes_a_per_epoch_metric_at_that_epoch(sweeps, tmp_path, capsys):
    base = ["--uri", sweeps["uri"], "--metric", "val_accuracy", "--by", "activation"]
    assert compare(capsys, *base, "--out", str(tmp_path / "last"))[0] == 0
    code, out, _ = compare(capsys, *base, "--step", "0", "--out", str(tmp_path / "first"))
    assert code == 0 and "val_accuracy at epoch 1" in out
    last = read_csv(tmp_path / "last", ["activation"])
    first = read_csv(tmp_path / "first", ["activation"])
    # The store's val_accuracy grows linearly to its last value over EPOCHS epochs.
    for activation in last.index:
        assert first.loc[activation, "mean"] == pytest.approx(last.loc[activation, "mean"] / EPOCHS)


# A learning-rate sweep on circles: activation, learning rate, then per seed 0, 1, 2 the
# last val_accuracy and the test_accuracy. Validation picks relu 0.01 and tanh 0.001; the
# test metric is planted to favour relu 0.1 and tanh 0.01, which the pick must ignore.
TUNED = "multirun/2026-11-28/09-00-00"
RATES = [
    ("relu", "0.001", [0.90, 0.91, 0.92], [0.89, 0.90, 0.90]),
    ("relu", "0.01", [0.95, 0.96, 0.94], [0.93, 0.95, 0.94]),
    ("relu", "0.1", [0.80, 0.82, 0.81], [0.99, 0.99, 0.99]),
    ("tanh", "0.001", [0.93, 0.94, 0.95], [0.92, 0.95, 0.93]),
    ("tanh", "0.01", [0.92, 0.93, 0.91], [0.99, 0.98, 0.99]),
    ("tanh", "0.1", [0.50, 0.52, 0.51], [0.50, 0.50, 0.50]),
]


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding the one sweep of :data:`RATES`, every run completed; its URI."""
    root = tmp_path_factory.mktemp("tuned")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(
        "circles", artifact_location=(root / "mlartifacts").as_uri()
    )
    start = 1_800_000_000_000
    parent = client.create_run(
        experiment_id,
        start_time=start,
        run_name=TUNED,
        tags={"role": "sweep", "sweep_id": f"/home/user/actlab/{TUNED}"},
    )
    for i, (activation, rate, validation, test) in enumerate(RATES):
        for seed in range(3):
            add_job(
                client,
                experiment_id,
                (activation, CCE, seed, "completed", test[seed]),
                "circles",
                (f"/home/user/actlab/{TUNED}", parent.info.run_id),
                start + 3 * i + seed,
                params={"optimizer.learning_rate": rate, "dataset.seed": 0},
                validation=validation[seed],
            )
    return uri


def test_tune_picks_each_groups_rate_on_validation_and_reports_its_test_metric(
    tuned_store, tmp_path, capsys
):
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--tune", "optimizer.learning_rate"]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"sweep {TUNED}: 6 runs, test_accuracy (higher is better), optimizer.learning_rate "
        "picked per group on validation"
    )
    table = read_csv(tmp_path, ["activation", "optimizer.learning_rate"])
    # Not relu 0.1 nor tanh 0.01, whose planted test accuracies (0.99) are the best.
    assert table.index.tolist() == [("relu", 0.01), ("tanh", 0.001)]
    assert table["mean"].tolist() == pytest.approx([0.94, 0.9333333])
    assert table["n"].tolist() == [3, 3]
    assert (
        "optimizer.learning_rate chosen per group by the best mean last-epoch val_accuracy "
        "(test metrics not consulted; 6 of 18 runs): relu 0.01 (0.9500), tanh 0.001 (0.9400)."
    ) in out.splitlines()
    # The same seeds on the same data: paired. tanh − relu per seed: −0.01, 0, −0.01.
    want = scipy_stats.ttest_rel([0.92, 0.95, 0.93], [0.93, 0.95, 0.94]).confidence_interval()
    tanh = table.loc[("tanh", 0.001)]
    assert [tanh["diff_low"], tanh["diff_high"]] == pytest.approx(list(want))
    assert (tanh["test"], tanh["verdict"], tanh["rank"]) == (
        "paired by seed",
        "tied with the best",
        1,
    )
    assert (
        "relu · 0.01 and tanh · 0.001 are indistinguishable at n = 3 (tanh · 0.001 − relu · 0.01 "
        "= −0.0067, 95% CI [−0.0210, +0.0077], paired by seed)."
    ) in out.splitlines()


def test_the_planted_test_metric_would_have_picked_otherwise(tuned_store, tmp_path, capsys):
    args = [
        "--uri",
        tuned_store,
        "--out",
        str(tmp_path),
        "--by",
        "activation,optimizer.learning_rate",
    ]
    assert compare(capsys, *args)[0] == 0
    table = pd.read_csv(tmp_path / "comparison.csv")
    best = table[table["verdict"] == "best"]
    assert best[["activation", "optimizer.learning_rate"]].values.tolist() == [["relu", 0.1]]


def test_untuned_at_one_rate_says_which_is_better(tuned_store, tmp_path, capsys):
    rate = "params.optimizer.learning_rate = '0.001'"
    args = ["--uri", tuned_store, "--out", str(tmp_path), "--filter", rate]
    code, out, _ = compare(capsys, *args)
    assert code == 0
    table = read_csv(tmp_path, ["activation"])
    # relu − tanh per seed: −0.03, −0.05, −0.03; the interval stays below 0.
    low, high = scipy_stats.ttest_rel([0.89, 0.90, 0.90], [0.92, 0.95, 0.93]).confidence_interval()
    assert table.loc["relu", ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [-0.0366667, low, high]
    )
    assert high < 0
    assert table["verdict"].tolist() == ["best", "worse than the best"]
    assert table["rank"].tolist() == [1, 2]
    assert (
        "tanh is better than relu, the next best, at n = 3 (relu − tanh = −0.0367, "
        f"95% CI [−{-low:.4f}, −{-high:.4f}], paired by seed)."
    ) in out.splitlines()
    md = (tmp_path / "comparison.md").read_text()
    assert "| tanh | 0.9333 ± 0.0153 | [0.8954, 0.9713] |" in md


@pytest.mark.parametrize("speed", ["val_accuracy=0.62", "val_loss=0.38"])
def test_speed_counts_epochs_to_a_level_and_the_area_per_epoch(sweeps, tmp_path, capsys, speed):
    args = ["--uri", sweeps["uri"], "--out", str(tmp_path), "--speed", speed]
    code, out, err = compare(capsys, *args)
    assert code == 0, err
    pace = pd.read_csv(tmp_path / "speed.csv").set_index(["activation", "loss"])
    # Each completed run's val_accuracy climbs linearly to its test accuracy in 3 epochs:
    # relu · mse's 0.90, 0.92, 0.94 get to 0.62 (val_loss to 0.38) at epochs 3, 3 and 2.
    relu = pace.loc[("relu", "mse")]
    half = scipy_stats.t.ppf(0.975, 2) * stdev([3, 3, 2]) / 3**0.5
    assert [relu["runs"], relu["never"]] == [3, 0]
    assert [relu["first"], relu["first_low"], relu["first_high"]] == pytest.approx(
        [8 / 3, 8 / 3 - half, 8 / 3 + half]
    )
    # The mean height of a curve v/3, 2v/3, v is 2v/3; of the loss, 1 − 2v/3.
    area = mean(2 * v / 3 for v in (0.90, 0.92, 0.94))
    assert relu["area"] == pytest.approx(area if "accuracy" in speed else 1 - area)
    # sigmoid · mse's one completed run ends at 0.60: it never gets there.
    assert pace.loc[("sigmoid", "mse"), ["runs", "never"]].tolist() == [1, 1]
    assert pace.loc[("relu", CCE), "first"] == 2
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| sigmoid | mse | 1 | 1 | never |" in markdown
    assert "| relu | mse | 3 | 0 | 2.67 [1.23, 4.10] |" in markdown
    assert "speed.csv" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tune", "nope"], "no param nope in the runs of sweep "),
        (["--tune", "activation", "--by", "activation"], "--tune activation chooses one value "),
        (
            ["--tune", "activation", "--metric", "grad_norm/hidden_0"],
            "--tune chooses on a validation metric, and grad_norm/hidden_0 has no val_ twin",
        ),
        (["--speed", "val_accuracy"], "--speed 'val_accuracy': give METRIC=THRESHOLD"),
        (["--speed", "val_rmse=0.5"], "no metric 'val_rmse' in the runs of sweep "),
    ],
)
def test_what_cannot_be_tuned_or_timed_is_one_line_and_exit_2(
    sweeps, tmp_path, capsys, args, message
):
    code, out, err = compare(capsys, "--uri", sweeps["uri"], "--out", str(tmp_path), *args)
    assert code == 2
    assert err.startswith("compare: ") and err.count("\n") == 1
    assert message in err
    assert out == ""


def test_a_resumed_sweep_is_not_split_by_what_does_not_change_training():
    # A sweep resumed into its directory: its redone runs differ from the first attempt's
    # in resume, and runs may differ in threads, objective or store, none of which changes
    # what was trained.
    from runner.compare.table import varying_params

    runs = pd.DataFrame(
        {
            "params.activation": ["relu", "relu", "tanh", "tanh"],
            "params.seed": ["0", "1", "0", "1"],
            "params.resume": ["False", "True", "False", "True"],
            "params.train.threads": ["None", "1", "None", "1"],
            "params.objective": ["None", "val_loss", "None", "val_loss"],
            "params.tracking.uri": ["a", "b", "a", "b"],
            "params.tracking.log_model": ["False", "True", "False", "True"],
        }
    )
    assert varying_params(runs) == ["activation"]
