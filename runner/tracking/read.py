"""Reading a store back, as ``runner.compare`` does: runs as a DataFrame, metric histories,
experiments by name; and attaching the comparison's files to the sweep's parent runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from runner.config import UserError
from runner.tracking.store import open_client, reason, store_errors

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient


class Reader:
    """The store ``uri``, read by explicit run and experiment ids."""

    def __init__(self, uri: str, client: MlflowClient | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self._client = client or MlflowClient(tracking_uri=uri)

    @classmethod
    def open(cls, uri: str, way_out: str) -> Reader:
        """The store opened as the runner opens it (:func:`open_client`), so that a file
        that is no MLflow store fails at once; :class:`UserError` ending in ``way_out``
        when it cannot be used."""
        try:
            return cls(uri, open_client(uri, way_out))
        except store_errors() as error:
            raise UserError(
                f"tracking store {uri} cannot be used: {reason(error)}. {way_out}"
            ) from None

    def runs(
        self,
        filter_string: str,
        experiment_ids: list[str] | None = None,
        order_by: list[str] | None = None,
    ) -> pd.DataFrame:
        """The runs that ``filter_string`` matches in ``experiment_ids`` (None: every
        experiment), as ``mlflow.search_runs`` returns them: ``params.*``, ``metrics.*``
        and ``tags.*`` columns. :class:`UserError` when the store refuses the search."""
        import mlflow
        from mlflow.exceptions import MlflowException

        # MLflow's search into a DataFrame takes no store of its own: it reads the one set
        # for the process.
        mlflow.set_tracking_uri(self.uri)
        try:
            return mlflow.search_runs(
                experiment_ids=experiment_ids,
                filter_string=filter_string,
                search_all_experiments=True,
                order_by=order_by,
            )
        except MlflowException as error:
            raise UserError(
                f"cannot search {self.uri} for {filter_string}: {error.message}"
            ) from None

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

    def log_files(self, run_id: str, paths: Iterable[Path], folder: str) -> None:
        """Attach the files ``paths`` to the run, in its artifact folder ``folder``."""
        for path in paths:
            self._client.log_artifact(run_id, str(path), folder)
