"""Tracking: one MLflow run per job, and one parent run per sweep that its jobs nest under.

- :mod:`~runner.tracking.store`: where the store is, opening it, and refusing one that
  cannot be used (an unreachable server, a read-only file, another application's database);
- :mod:`~runner.tracking.tracker`: :class:`Tracker`, the store's experiments, sweep parents
  and runs, and :func:`open_tracker`;
- :mod:`~runner.tracking.run`: :class:`Run`, ended on every path with its outcome
  (:meth:`Run.recording`, where an exception becomes a run's status);
- :mod:`~runner.tracking.lost`: what a failing store did not take (``unrecorded.json``);
- :mod:`~runner.tracking.writer`: chunked ``log_batch`` and the background metrics writer;
- :mod:`~runner.tracking.remote`: the tracker of a sweep whose jobs train in its process,
  kept by a tracking process of its own, so that the sweep's process never imports MLflow;
- :mod:`~runner.tracking.model`: a run's logged Keras model;
- :mod:`~runner.tracking.untracked`: the stand-ins for ``tracking.enabled=false``;
- :mod:`~runner.tracking.protocol`: what a tracker and a run offer a job, both kinds;
- :mod:`~runner.tracking.ui`: addresses in the MLflow UI;
- :mod:`~runner.tracking.read`: reading runs back, for ``runner.compare``.

MLflow is imported only when a store is opened, and for a sweep that trains in its own
process, only in its tracking process: with ``tracking.enabled=false`` the job gets
:class:`Untracked`, records nothing and never loads MLflow. No code outside this package
uses MLflow's client.
"""

from runner.tracking.lost import Unrecorded
from runner.tracking.protocol import AnyRun, AnyTracker, FinishedRun
from runner.tracking.read import Reader
from runner.tracking.run import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STATUS, Run
from runner.tracking.store import ROOT, quoted, sqlite_path, tracking_uri
from runner.tracking.tracker import ROLE, SWEEP_ID, Tracker, open_tracker
from runner.tracking.ui import latest_page, ui_address, ui_url
from runner.tracking.untracked import Untracked, UntrackedRun

__all__ = [
    "COMPLETED",
    "DIVERGED",
    "FAILED",
    "INTERRUPTED",
    "ROLE",
    "ROOT",
    "STATUS",
    "SWEEP_ID",
    "AnyRun",
    "AnyTracker",
    "FinishedRun",
    "Reader",
    "Run",
    "Tracker",
    "Unrecorded",
    "Untracked",
    "UntrackedRun",
    "latest_page",
    "open_tracker",
    "quoted",
    "sqlite_path",
    "tracking_uri",
    "ui_address",
    "ui_url",
]
