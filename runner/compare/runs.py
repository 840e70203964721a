"""The runs to compare, read from the store: a sweep's, an experiment's, or those an MLflow
filter picks, as a DataFrame (``params.*``, ``metrics.*``, ``tags.*`` columns), and their
metrics' histories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from runner.config import UserError
from runner.tracking import COMPLETED, INTERRUPTED, ROLE, SWEEP_ID, Reader, quoted, sqlite_path
from runner.tracking.store import masked

# What to do about a store that compare cannot use.
WAY_OUT = "Point --uri (or MLFLOW_TRACKING_URI) at the MLflow store that the runner records in."
RUN_NAME = "tags.mlflow.runName"
OUTCOME = "tags.outcome"
# What a job trained, seed included: runs that share it are one replicate.
FINGERPRINT = "tags.fingerprint"
# How many sweep names an unknown --sweep lists.
RECENT = 5


def sweep_runs(uri: str, sweep_id: str) -> pd.DataFrame:
    """The job runs of one sweep, in every experiment of the store, as ``mlflow.search_runs``
    returns them."""
    return Reader(uri).runs(f"tags.{SWEEP_ID} = {quoted(sweep_id)} and tags.{ROLE} = 'job'")


def outcomes(runs: pd.DataFrame) -> pd.Series:
    """Each run's ``outcome`` tag; a run without one never reached its end (killed before
    MLflow heard of it, or still running), so it counts as interrupted."""
    return runs.get(OUTCOME, pd.Series(index=runs.index, dtype=object)).fillna(INTERRUPTED)


def distinct(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one run per training fingerprint: the latest FINISHED one, or the
    latest when none finished. Two runs that trained the same model on the same data with
    the same seed are one replicate, not two: a job run twice, or a killed run that a
    resume redid. Runs without a fingerprint are all kept. ``attrs["set_aside"]`` counts
    the others."""
    repeated = pd.Series(False, index=runs.index)
    if FINGERPRINT in runs.columns:
        ranked = runs.assign(_finished=runs["status"].eq("FINISHED")).sort_values(
            ["_finished", "start_time"], ascending=False, kind="stable"
        )
        repeated = ranked[FINGERPRINT].notna() & ranked.duplicated(FINGERPRINT)
    kept = runs[~repeated.reindex(runs.index)]
    kept.attrs["set_aside"] = int(repeated.sum())
    return kept


@dataclass
class Selection:
    """The runs to compare (one per fingerprint, :func:`distinct`), how many repeats were
    set aside, what they are (``sweep multirun/…`` or ``experiment digits``) and, for a
    sweep, the parent runs that receive the comparison."""

    runs: pd.DataFrame
    label: str
    parents: list[str] = field(default_factory=list)
    set_aside: int = 0


def find_sweep(
    reader: Reader, where: str, sweep: str | None, experiment_ids: list[str] | None
) -> pd.DataFrame:
    """The parent runs of one sweep (one per experiment it touched): the sweep whose parent
    started last, or the one that ``sweep`` names by its run name (the sweep directory as
    given), its id (the directory made absolute) or a path that resolves to that id, among
    the experiments ``experiment_ids`` (None: all of them, ``where`` names them in errors).
    When two sweeps share a name, the later one wins."""
    parents = reader.runs(
        f"tags.{ROLE} = 'sweep'", experiment_ids, order_by=["attributes.start_time DESC"]
    )
    if parents.empty:
        raise UserError(
            f"no sweep in {where}: run one (make sweep), or compare an experiment's runs with "
            "--experiment NAME"
        )
    if sweep is None:
        sweep_id = parents[f"tags.{SWEEP_ID}"].iloc[0]
    else:
        ids = parents[f"tags.{SWEEP_ID}"]
        named = parents[
            (parents[RUN_NAME] == sweep) | ids.isin({sweep, str(Path(sweep).resolve())})
        ]
        if named.empty:
            recent = parents.drop_duplicates(f"tags.{SWEEP_ID}")[RUN_NAME].head(RECENT)
            raise UserError(f"no sweep {sweep!r} in {where}; the latest: {', '.join(recent)}")
        sweep_id = named[f"tags.{SWEEP_ID}"].iloc[0]
    return parents[parents[f"tags.{SWEEP_ID}"] == sweep_id]


def select(
    uri: str,
    sweep: str | None = None,
    experiment: str | None = None,
    filter_string: str | None = None,
) -> Selection:
    """The job runs to compare: the sweep ``sweep`` names, else the whole of ``experiment``,
    else the latest sweep; a sweep and an experiment together take the sweep's runs in that
    experiment, and ``filter_string`` (MLflow's syntax) narrows any of them. Raises
    :class:`UserError` when the store, sweep or experiment is missing or no run matches."""
    db = sqlite_path(uri)
    # MLflow would create an empty store at a mistyped path rather than say it is missing.
    if db is not None and not db.exists():
        raise UserError(f"no MLflow store at {db}: run a job or a sweep first (make sweep)")
    # A SQLite store is opened here: a file that is no MLflow store fails at once.
    reader = Reader.open(uri, WAY_OUT)
    experiment_ids = None
    where = uri
    if experiment is not None:
        found = reader.experiment_id(experiment)
        if found is None:
            names = ", ".join(reader.experiment_names()) or "none"
            raise UserError(f"no experiment {experiment!r} in {masked(uri)}; experiments: {names}")
        experiment_ids = [found]
        where = f"experiment {experiment}"
    clauses = [f"tags.{ROLE} = 'job'"]
    selection = Selection(pd.DataFrame(), where)
    if sweep is not None or experiment is None:
        parents = find_sweep(reader, where, sweep, experiment_ids)
        clauses.append(f"tags.{SWEEP_ID} = {quoted(parents[f'tags.{SWEEP_ID}'].iloc[0])}")
        selection.label = f"sweep {parents[RUN_NAME].iloc[0]}" + (
            f" in experiment {experiment}" if experiment else ""
        )
        selection.parents = parents["run_id"].tolist()
    if filter_string:
        clauses.append(filter_string)
    runs = reader.runs(" and ".join(clauses), experiment_ids)
    if runs.empty:
        matching = f" matching {filter_string!r}" if filter_string else ""
        raise UserError(f"no job runs{matching} in {selection.label}")
    selection.runs = distinct(runs)
    selection.set_aside = selection.runs.attrs["set_aside"]
    return selection


class Histories:
    """The per-epoch histories of runs' metrics, each run's read from the store once."""

    def __init__(self, uri: str):
        self._uri = uri
        # Opened at the first read: opening a missing SQLite store would create it.
        self._reader: Reader | None = None
        self._read: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def of(self, runs: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
        """``metric``'s history in every completed run of ``runs``: one row per run and
        epoch, with the run's ``by`` params (without ``params.``), ``run`` (its id),
        ``step`` and ``value``."""
        completed = runs[outcomes(runs) == COMPLETED]
        missing = [r for r in completed["run_id"] if (r, metric) not in self._read]
        if missing:
            self._reader = self._reader or Reader(self._uri)
            for run_id, points in self._reader.histories(missing, metric).items():
                self._read[run_id, metric] = points
        rows = [
            (*group, run_id, step, value)
            for *group, run_id in completed[[f"params.{p}" for p in by] + ["run_id"]].itertuples(
                index=False
            )
            for step, value in self._read[run_id, metric]
        ]
        return pd.DataFrame(rows, columns=[*by, "run", "step", "value"])


def steps_text(steps: list[int]) -> str:
    """Epoch indices as a reader takes them in: ``0 to 19``, ``0``, or ``0, 2, 5``."""
    if len(steps) > 2 and steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]} to {steps[-1]}"
    return ", ".join(map(str, steps))


def at_step(histories: Histories, runs: pd.DataFrame, metric: str, step: int) -> pd.DataFrame:
    """The runs with ``metric`` replaced by its value at ``step`` (an epoch index, from 0)
    instead of its last value: early epochs are where vanishing gradients show. Raises
    :class:`UserError`, naming the epochs there are, when no completed run logged
    ``metric`` at ``step``."""
    history = histories.of(runs, [], metric)
    steps = sorted(history["step"].unique().tolist())
    if step not in steps:
        logged = f"at epoch index {steps_text(steps)}" if steps else "at no epoch"
        raise UserError(
            f"--step {step}: the completed runs logged {metric} {logged} (0 is the first epoch)"
        )
    values = history[history["step"] == step].set_index("run")["value"]
    return runs.assign(**{f"metrics.{metric}": runs["run_id"].map(values).astype(float)})
