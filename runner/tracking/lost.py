"""What a run could not write to its store: kept in ``unrecorded.json`` in the job's output
directory, and told to the job by :class:`Unrecorded`."""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Metric

UNRECORDED_FILE = "unrecorded.json"


class Unrecorded(Exception):
    """A run ended, but part of it could not be written to the store. The message, which
    the run has logged already, says what and names the file that keeps it."""


@dataclass
class Lost:
    """What a run could not write to its store."""

    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    status: str | None = None

    def __bool__(self) -> bool:
        return any((self.metrics, self.params, self.tags, self.inputs, self.artifacts, self.status))

    def summary(self) -> str:
        """``12 metric values, 2 tags, the status FINISHED and the artifact x.png``."""

        def count(items: Sized, noun: str) -> str | None:
            n = len(items)
            return f"{n} {noun}{'s' if n != 1 else ''}" if n else None

        parts = [
            count(self.metrics, "metric value"),
            count(self.params, "param"),
            count(self.tags, "tag"),
            count(self.inputs, "dataset input"),
            f"the status {self.status}" if self.status else None,
            f"the artifact{'s' if len(self.artifacts) > 1 else ''} {', '.join(self.artifacts)}"
            if self.artifacts
            else None,
        ]
        parts = [part for part in parts if part]
        return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]

    def record(self) -> dict[str, Any]:
        """What was lost, as ``unrecorded.json`` lists it."""
        return {
            "status": self.status,
            "params": self.params,
            "tags": self.tags,
            "metrics": [
                {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}
                for m in self.metrics
            ],
            "inputs": self.inputs,
            "artifacts": self.artifacts,
        }
