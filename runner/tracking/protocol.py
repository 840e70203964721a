"""What a job records into: a store's :class:`~runner.tracking.tracker.Tracker` and its
:class:`~runner.tracking.run.Run`, or, with ``tracking.enabled=false``, the untracked
stand-ins; a job's code is written against these two protocols alone."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class FinishedRun:
    """A run that finished before with the config a job would run again: its id, and its
    last value of each metric."""

    run_id: str
    metrics: dict[str, float]


class AnyRun(Protocol):
    """A job's run: what it logs while it trains. ``outcome`` is ``completed`` until the job
    says otherwise (``diverged``); the run ends when the tracker's ``open_run`` block does."""

    run_id: str | None
    name: str
    outcome: str

    def log_params(self, params: dict[str, object]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...

    def log_inputs(self, name: str, source: dict[str, str], splits: dict[str, Any]) -> None: ...

    def set_tags(self, tags: dict[str, object]) -> None: ...

    def log_texts(self, texts: dict[str, str]) -> None: ...

    def log_figure(self, figure: object, path: str) -> None: ...

    def log_files(self, files: dict[str, bytes]) -> None: ...

    def log_model(self, net: Any, step: int) -> None: ...


class AnyTracker(Protocol):
    """A store, as the jobs of a run or a sweep use it: experiments, the sweep's parent,
    earlier runs of the same config, and the job's own run."""

    uri: str | None

    def experiment(self, name: str) -> str: ...

    def reap_orphans(self) -> list[str]: ...

    def sweep_parent(
        self, experiment: str, sweep_id: str, name: str, claim: bool = False
    ) -> str | None: ...

    def finished_run(
        self, experiment_id: str, fingerprint: str, with_model: bool = False
    ) -> FinishedRun | None: ...

    def adopt(self, run_id: str, sweep_id: str, parent_id: str) -> None: ...

    def end_sweep(self, sweep_id: str, outcome: str) -> None: ...

    def wait(self) -> None: ...

    def call(self, function: str, *args: Any) -> Any:
        """The function ``function`` (``module:name``) called with ``args`` in the process
        that has the store open: the sweep's table, read and drawn where MLflow is."""

    # ``= ...``: the argument may be left out, with the default each implementation gives it.
    def open_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = ...,
        output_dir: Path | None = ...,
        deferred: bool = ...,
    ) -> AbstractContextManager[AnyRun]: ...


def named(function: str) -> Callable[..., Any]:
    """The function that ``module:name`` names, its module imported."""
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)
