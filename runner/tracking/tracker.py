"""The tracker of a store: its experiments, the sweeps' parent runs, and the jobs' runs.

Everything goes through ``MlflowClient`` with explicit run ids rather than MLflow's
process-wide active run, so one process can record several runs side by side.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.config import UserError
from runner.tracking.lost import UNRECORDED_FILE
from runner.tracking.protocol import AnyTracker, FinishedRun, named
from runner.tracking.run import FLUSH_SINGLE, FLUSH_SWEEP, INTERRUPTED, STATUS, Run
from runner.tracking.store import (
    connect,
    masked,
    quoted,
    sqlite_path,
    store_errors,
    store_lock,
    tracking_uri,
    unusable,
)
from runner.tracking.untracked import Untracked
from runner.tracking.writer import Writer, log_batch

SWEEP_ID = "sweep_id"
ROLE = "role"
FINGERPRINT = "fingerprint"
# The finished runs of one config that resume looks through for one with a logged model.
FINISHED_RUNS = 100


def open_tracker(tracking: Any, opened: dict[str, AnyTracker], apart: bool = False) -> AnyTracker:
    """The store that ``tracking`` names (a job's tracking spec: ``enabled``, ``uri``,
    ``adopt_foreign_db``), or, when it is not enabled, a stand-in that records nothing.
    ``opened``: the trackers this process has opened, by store, which the jobs of a sweep
    share (their client, the experiments found and the sweep parents found or made).
    ``apart``: a store not opened yet is kept by a tracking process of its own
    (:class:`~runner.tracking.remote.RemoteTracker`), and this process never imports MLflow
    for it."""
    if not tracking.enabled:
        return Untracked()
    uri = tracking_uri(tracking.uri)
    if uri not in opened:
        if apart:
            from runner.tracking.remote import RemoteTracker

            opened[uri] = RemoteTracker(uri, tracking.adopt_foreign_db)
        else:
            opened[uri] = Tracker(uri, tracking.adopt_foreign_db)
    return opened[uri]


class Tracker:
    """A tracking store: finds or creates experiments, sweep parents and runs."""

    def __init__(self, uri: str, adopt_foreign_db: bool = False):
        self.uri = uri
        self.client = connect(uri, adopt_foreign_db)
        self._experiments: dict[str, str] = {}
        self._sweep_parents: dict[tuple[str, str], str] = {}

    def _all_experiments(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def _end(self, run_id: str, outcome: str) -> None:
        """End a run that this process did not write, such as an orphan or a sweep's parent."""
        from mlflow.entities import RunTag

        log_batch(self.client, run_id, tags=[RunTag("outcome", outcome)])
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

    def finished_run(
        self, experiment_id: str, fingerprint: str, with_model: bool = False
    ) -> FinishedRun | None:
        """A FINISHED run of the experiment with this config fingerprint, if there is one;
        ``with_model``: one that logged its trained model too (the fingerprint leaves
        ``tracking.*`` out, so a run with the same fingerprint may have none)."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"status = 'FINISHED' and tags.{FINGERPRINT} = {quoted(fingerprint)}",
            max_results=FINISHED_RUNS,
        )
        for run in found:
            if not with_model or (run.outputs and run.outputs.model_outputs):
                return FinishedRun(run.info.run_id, dict(run.data.metrics))
        return None

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
            raise UserError(
                f"tracking store {masked(self.uri)} cannot be used: {error.message}"
            ) from None

    def sweep_parent(self, experiment: str, sweep_id: str, name: str, claim: bool = False) -> str:
        """The run id of the sweep's parent run in the experiment named ``experiment``
        (created when missing, as the parent is).
        ``claim`` (the sweep's own process, at its start) takes a parent found from an earlier
        sweep into the same directory for this process: marked RUNNING again, as this
        process's, so that the orphan check does not take it for the earlier, dead
        process's. A parent whose process still runs is never taken: two sweeps into one
        directory at once would mix their jobs (and their output directories)."""
        experiment_id = self.experiment(experiment)
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
            log_batch(self.client, parent.info.run_id, tags=tags)
        return parent.info.run_id

    def _parents(self, experiments: list[str], sweep_id: str, **kwargs: Any) -> list:
        """The sweep's parent runs in ``experiments``, the earliest first."""
        return self.client.search_runs(
            experiments,
            filter_string=f"tags.{SWEEP_ID} = {quoted(sweep_id)} and tags.{ROLE} = 'sweep'",
            order_by=["attributes.start_time ASC"],
            **kwargs,
        )

    def log_file(self, run_id: str, path: Path) -> None:
        """Attach a file to a run, such as a search's best params to its sweep's parent."""
        self.client.log_artifact(run_id, str(path))

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        """End the sweep's parent runs, in every experiment, with the sweep's outcome. A
        parent no run went under, in an experiment where none of the sweep's jobs ran (the
        master config's, when the jobs picked other datasets), is deleted instead, so that
        the UI shows no empty sweep, once it has ended (a deleted run keeps its status);
        unless no parent has a run at all."""
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
            self._end(parent, outcome)
            if used and parent not in used:
                self.client.delete_run(parent)

    def end_left_sweep(self, sweep_id: str, outcome: str) -> None:
        """End with ``outcome`` the sweep's parent runs still RUNNING as this process's,
        once the sweep's process is gone; not one that a later sweep into the same
        directory has taken since, which tagged it with its own process."""
        for parent in self._parents(self._all_experiments(), sweep_id):
            if parent.info.status == "RUNNING" and parent.data.tags.get("pid") == str(_pid()):
                self._end(parent.info.run_id, outcome)

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = None,
        deferred: bool = False,
        role: str = "job",
    ) -> Run:
        """A job's run, nested in ``parent_id`` (a sweep's parent run) when given, created
        by the writer thread. ``deferred``: a sweep's job, whose values may wait longer to
        be written (:data:`runner.tracking.run.FLUSH_SWEEP`). ``role``: ``job``, which
        ``runner.compare`` reads, or another kind of run (``lr_find``) that it never does."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = dict(tags, **{ROLE: role}, **_process_tags())
        if parent_id is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent_id
        flush_every = FLUSH_SWEEP if deferred else FLUSH_SINGLE
        return Run(self.client, experiment_id, name, tags, flush_every)

    @contextmanager
    def open_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = None,
        output_dir: Path | None = None,
        deferred: bool = False,
        role: str = "job",
    ) -> Iterator[Run]:
        """Start a run (:meth:`start_run`, ``role`` as there), and end it on every path
        (:meth:`Run.recording`). What the store did not take is kept in
        ``unrecorded.json`` in ``output_dir`` (the current directory when None).
        ``deferred``: a sweep's job, whose record the sweep goes on without waiting for."""
        run = self.start_run(experiment_id, name, tags, parent_id, deferred, role)
        with run.recording(self.uri, (output_dir or Path.cwd()) / UNRECORDED_FILE, deferred):
            yield run

    def wait(self) -> None:
        """Return once every run this process has ended is recorded (a sweep's end)."""
        Writer.get().wait()

    def call(self, function: str, *args: Any) -> Any:
        """The function ``function`` (``module:name``) called with ``args`` where the store
        is open: here (see :meth:`runner.tracking.remote.RemoteTracker.call`)."""
        return named(function)(*args)


# The process that the runs' ``pid`` tags name when it is not this one: a tracking
# process's sweep (runner.tracking.remote), whose jobs the runs are.
owner_pid: int | None = None


def _pid() -> int:
    return owner_pid or os.getpid()


def _process_tags() -> dict[str, str]:
    """Who writes a run: a run left RUNNING by a process that is gone can then be told
    from one still training."""
    return {"host": socket.gethostname(), "pid": str(_pid())}


def _owner(run: Any) -> str | None:
    """The other process that writes the RUNNING run ``run``, as ``process 123 on host``;
    None when the run has ended, its process is gone or is this one, or no process is
    recorded. A process on another host cannot be asked, and counts as running."""
    if run.info.status != "RUNNING":
        return None
    host, pid = run.data.tags.get("host", ""), run.data.tags.get("pid", "")
    if not host or not pid.isdigit():
        return None
    if host == socket.gethostname() and (int(pid) == _pid() or not _alive(int(pid))):
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
