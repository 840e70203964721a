"""Every use of another library's private API, in one package, one module per library.

Each entry checks the installed version of the library, as major.minor, *before* it
imports anything private, through :func:`written_for`. On a version it was not written
for, it warns once and takes the library's public path instead: slower or leakier, but
correct. tests/test_compat.py forces every fallback.

- :mod:`~runner.compat.hydra`: the ConfigStore copies, a composed job's
  ``override_dirname``, the grid sweeper to build on, and a fused job's ``run_job``
  without its copies of the Hydra node;
- :mod:`~runner.compat.keras`: saving a model on JAX without importing TensorFlow;
- :mod:`~runner.compat.tensorflow`: the gradient registry that leaks a traced step a job;
- :mod:`~runner.compat.launchers`: joblib's, submitit's and Ray's workers stopped gently;
- :mod:`~runner.compat.multiprocessing`: a worker's semaphores freed as it exits;
- :mod:`~runner.compat.mlflow`: many runs' metric histories read in one query, and an empty
  store made as MLflow makes a new one;
- :mod:`~runner.compat.omegaconf`: a fused job's saved configs written by libyaml.
"""

from __future__ import annotations

import functools
import warnings
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def installed(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed: read once a
    process: each fused job asks for Hydra's and OmegaConf's, and reading the package's
    metadata is not free."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def minor(found: str) -> str:
    """``3.15.1`` as ``3.15``: what an entry is guarded on."""
    return ".".join(found.split(".")[:2])


def written_for(
    package: str, versions: tuple[str, ...], what: str, found: str | None = None
) -> bool:
    """Whether the installed ``package`` (or its version ``found``, for Python itself) is
    one of ``versions``, each major.minor such as ``"1.3"``, which ``what`` was written for;
    otherwise warn, once per entry, that it runs without it."""
    found = found or installed(package)
    if found is not None and minor(found) in versions:
        return True
    # The warnings module shows a message once per place: once per entry and process.
    warnings.warn(
        f"{package} {found or '(not installed)'} is not one of the versions {what} was "
        f"written for ({', '.join(versions)}); running without it.",
        stacklevel=3,
    )
    return False
