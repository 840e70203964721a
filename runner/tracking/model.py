"""Logging a trained Keras model in a run, with MLflow's Keras flavour, through the run's own
client: ``mlflow.keras.log_model`` records through MLflow's process-wide store and active
run, and without an active run puts the model in the default experiment, linked to no run."""

from __future__ import annotations

import tempfile
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# The name of a run's logged model: runs:/<run id>/model.
MODEL = "model"
# What serving a logged model installs besides Keras, by the backend it was saved on.
BACKEND_PACKAGES = {"jax": ("jax",), "tensorflow": ("tensorflow", "tensorflow-cpu")}


def log_model(client: MlflowClient, experiment_id: str, run_id: str, net: Any, step: int) -> None:
    """Log the Keras model ``net``, as of epoch ``step``, as the run's logged model
    :data:`MODEL`, in the run's experiment, which
    ``mlflow.pyfunc.load_model(f"runs:/{run_id}/model")`` loads. A model whose files could
    not be written is marked FAILED, and the error propagates.

    The requirements are given rather than inferred, which MLflow does by loading the model
    in a new process: seconds a model."""

    import mlflow.keras
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from runner.compat.keras import saving_without_tensorflow

    logged = client.create_logged_model(experiment_id, name=MODEL, source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as staging, saving_without_tensorflow():
            path = str(Path(staging, MODEL))
            mlflow.keras.save_model(
                net,
                path,
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    run_id=run_id,
                    model_uuid=logged.model_id,
                    model_id=logged.model_id,
                ),
                signature=signature(net),
                pip_requirements=requirements(),
            )
            client.log_model_artifacts(logged.model_id, path)
    except BaseException:
        # The model's record says it never got its files; the run lists it as lost.
        with suppress(Exception):
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])


def signature(net: Any) -> Any:
    """The model's input and output as MLflow records them, and checks a prediction's
    input against: rows of float32 features in, rows of float32 outputs out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def schema(tensor: Any) -> Schema:
        return Schema([TensorSpec(np.dtype(tensor.dtype), (-1, *tensor.shape[1:]))])

    return ModelSignature(schema(net.inputs[0]), schema(net.outputs[0]))


def requirements() -> list[str]:
    """What serving a logged model installs: Keras and the backend it was saved on, at the
    versions installed here."""

    import keras
    import mlflow.keras

    pinned = mlflow.keras.get_default_pip_requirements()
    for package in BACKEND_PACKAGES[keras.backend.backend()]:
        try:
            return [*pinned, f"{package}=={version(package)}"]
        except PackageNotFoundError:
            continue
    return pinned
