"""Reading a store back, as ``runner.compare`` does: runs as a DataFrame, metric histories,
experiments by name; and attaching a comparison to a sweep's parent run (its files, table,
metrics and description)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runner.config import UserError
from runner.tracking.store import masked, open_client, reach_server, reason, store_errors
from runner.tracking.writer import log_batch

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient


# The runs one search call returns: MLflow's largest page for a DataFrame.
PAGE = 10_000
# A run's attributes, the first columns of :meth:`Reader.runs`.
INFO = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")
# Then what the run logged, a column for each key: ``metrics.loss``, ``params.seed``...
KINDS = ("metrics", "params", "tags")


def _missing(column: str) -> object:
    """What a run without ``column`` holds there, as in ``mlflow.search_runs``."""

    return np.nan if column.startswith("metrics.") else None


class Reader:
    """The store ``uri``, read by explicit run and experiment ids."""

    def __init__(self, uri: str, client: MlflowClient | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self._client = client or MlflowClient(tracking_uri=uri)

    @classmethod
    def open(cls, uri: str, way_out: str) -> Reader:
        """The store opened as the runner opens it (:func:`reach_server`,
        :func:`open_client`), so that a tracking server that does not answer, or a file
        that is no MLflow store, fails at once, and a server's calls give up after seconds;
        :class:`UserError` ending in ``way_out`` when it cannot be used."""
        reach_server(uri, way_out)
        try:
            return cls(uri, open_client(uri, way_out))
        except store_errors() as error:
            raise UserError(
                f"tracking store {masked(uri)} cannot be used: {reason(error)}. {way_out}"
            ) from None

    def runs(
        self,
        filter_string: str,
        experiment_ids: list[str] | None = None,
        order_by: list[str] | None = None,
    ) -> pd.DataFrame:
        """The runs that ``filter_string`` matches in ``experiment_ids`` (None: every
        experiment), with the columns of ``mlflow.search_runs``: ``run_id``, ``status`` and
        the run's other attributes, then ``metrics.*``, ``params.*`` and ``tags.*``.
        :class:`UserError` when the store refuses the search.

        Built here from the client's pages because ``mlflow.search_runs`` reads the store
        set for the whole process, and runs are addressed by store and id."""
        import pandas as pd
        from mlflow.exceptions import MlflowException

        try:
            if experiment_ids is None:
                experiment_ids = [e.experiment_id for e in self._client.search_experiments()]
            found, token = [], None
            while experiment_ids:
                page = self._client.search_runs(
                    experiment_ids,
                    filter_string,
                    order_by=order_by,
                    max_results=PAGE,
                    page_token=token,
                )
                found.extend(page)
                token = page.token
                if not token:
                    break
        except MlflowException as error:
            raise UserError(
                f"cannot search {masked(self.uri)} for {filter_string}: {error.message}"
            ) from None
        columns: dict[str, list] = {name: [] for name in INFO}
        for row, run in enumerate(found):
            values = {name: getattr(run.info, name) for name in INFO}
            for name in ("start_time", "end_time"):
                values[name] = pd.to_datetime(values[name], unit="ms", utc=True)
            for kind in KINDS:
                items = getattr(run.data, kind)
                values.update((f"{kind}.{key}", value) for key, value in items.items())
            for name in values:
                if name not in columns:
                    columns[name] = [_missing(name)] * row
            for name, column in columns.items():
                column.append(values.get(name, _missing(name)))
        order = [*INFO, *(n for kind in KINDS for n in columns if n.startswith(f"{kind}."))]
        return pd.DataFrame({name: columns[name] for name in order})

    def experiment_id(self, name: str) -> str | None:
        """The id of the experiment ``name``; None when there is none."""
        found = self._client.get_experiment_by_name(name)
        return None if found is None else found.experiment_id

    def experiment_names(self) -> list[str]:
        return [experiment.name for experiment in self._client.search_experiments()]

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """Each (step, value) that the run logged of ``metric``, in the order it logged them."""
        return [
            (point.step, point.value) for point in self._client.get_metric_history(run_id, metric)
        ]

    def histories(self, run_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
        """:meth:`history` of each run of ``run_ids``: in bulk from an SQL store
        (:func:`runner.compat.mlflow.histories`), else run by run."""
        from runner.compat import mlflow as compat_mlflow

        found = compat_mlflow.histories(self._client, run_ids, metric)
        if found is None:
            found = {run_id: self.history(run_id, metric) for run_id in run_ids}
        return found

    def free_folder(self, run_id: str, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``...: the first that is no artifact of the run
        yet, so that what goes there never mixes with what an earlier call left."""
        taken = {Path(f.path).name for f in self._client.list_artifacts(run_id)}
        return next(
            folder
            for folder in (name, *(f"{name}-{i}" for i in range(2, len(taken) + 3)))
            if folder not in taken
        )

    def description(self, run_id: str) -> str | None:
        """The run's description (the UI's, Markdown), None when it has none."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        return self._client.get_run(run_id).data.tags.get(MLFLOW_RUN_NOTE)

    def record(
        self,
        run_id: str,
        folder: str,
        paths: Iterable[Path],
        table: pd.DataFrame,
        metrics: dict[str, float],
        description: str | None,
    ) -> None:
        """Attach a comparison to the run: the files ``paths`` and ``table`` (as MLflow's
        table artifact ``table.json``, which the UI shows as a table) in its artifact
        folder ``folder``, ``metrics`` (at step 0), and ``description`` (Markdown, at most
        8,000 characters) unless it is None."""
        import time

        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        for path in paths:
            self._client.log_artifact(run_id, str(path), folder)
        self._client.log_table(run_id, table, f"{folder}/table.json")
        now = int(time.time() * 1000)
        found = [Metric(key, value, now, 0) for key, value in metrics.items()]
        log_batch(self._client, run_id, metrics=found)
        if description is not None:
            self._client.set_tag(run_id, MLFLOW_RUN_NOTE, description)
