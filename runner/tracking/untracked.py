"""The stand-ins for a store when ``tracking.enabled=false``: jobs train and log to the
console, nothing is recorded, and MLflow is never imported."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runner.tracking.protocol import named
from runner.tracking.run import COMPLETED


class Untracked:
    """A tracker that records nothing (see :class:`runner.tracking.protocol.AnyTracker`)."""

    uri = None

    def experiment(self, name: str) -> str:
        return ""

    def reap_orphans(self) -> list[str]:
        return []

    def sweep_parent(self, experiment: str, sweep_id: str, name: str, claim: bool = False) -> None:
        return None

    def finished_run(self, experiment_id: str, fingerprint: str, with_model: bool = False) -> None:
        return None

    def adopt(self, run_id: str, sweep_id: str, parent_id: str) -> None:
        pass

    def end_sweep(self, sweep_id: str, outcome: str) -> None:
        pass

    def wait(self) -> None:
        pass

    def call(self, function: str, *args: Any) -> Any:
        return named(function)(*args)

    @contextmanager
    def open_run(
        self, experiment_id: str, name: str, *args: object, **kwargs: object
    ) -> Iterator[UntrackedRun]:
        yield UntrackedRun(name)


class UntrackedRun:
    """A run that records nothing, for :class:`Untracked`."""

    run_id = None

    def __init__(self, name: str):
        self.name = name
        self.outcome = COMPLETED

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_inputs(self, name: str, source: dict[str, str], splits: dict[str, tuple]) -> None:
        pass

    def set_tags(self, tags: dict[str, object]) -> None:
        pass

    def log_texts(self, texts: dict[str, str]) -> None:
        pass

    def log_figure(self, figure: object, path: str) -> None:
        pass

    def log_files(self, files: dict[str, bytes]) -> None:
        pass

    def log_model(self, net: object, step: int) -> None:
        pass
