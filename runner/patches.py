"""Every place where the runner reaches into another library's internals, in one module.

Each patch says why it exists and checks the library version it was written for; on
another version it warns once and falls back to the library's own behaviour, which is
slower or leakier but correct.
"""

from __future__ import annotations

import functools
import logging
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

log = logging.getLogger(__name__)


def _written_for(package: str, prefixes: tuple[str, ...], what: str) -> bool:
    found = version(package)
    if found.startswith(prefixes):
        return True
    warnings.warn(
        f"{package} {found} is newer than the versions {what} was written for "
        f"({', '.join(prefixes)}); running without it.",
        stacklevel=3,
    )
    return False


def hydra_config_store_copies_as_itself() -> None:
    """Make the process's ConfigStore copy as itself.

    Hydra 1.3 deep-copies its config repository for every composition and every group it
    lists, and with it the ConfigStore that the repository holds, every plugin's config
    included: ``--help`` made 82 copies and a sweep one per job. The copies are only read,
    and Hydra's later fix (pull request 2928) has them use the live store in the same way."""
    from hydra.core.config_store import ConfigStore

    if _written_for("hydra-core", ("1.3.",), "the ConfigStore copy patch"):
        ConfigStore.__deepcopy__ = _itself


def _itself(store: object, memo: dict) -> object:
    return store


TENSORFLOW_VERSIONS = ("2.16.", "2.17.", "2.18.", "2.19.", "2.20.", "2.21.")


def tensorflow_gradient_registry() -> dict | None:
    """TensorFlow's process-wide registry of gradient functions (a dict by name), which has
    no method to unregister one (see runner/engine/tensorflow.py); None on a TensorFlow
    this was not written for."""
    from tensorflow.python.framework import ops

    package = "tensorflow-cpu" if _has("tensorflow-cpu") else "tensorflow"
    if not _written_for(package, TENSORFLOW_VERSIONS, "the gradient-registry cleanup"):
        return None
    return ops.gradient_registry._registry


def _has(package: str) -> bool:
    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


def hydra_overrides_dirname(
    overrides: list, kv_sep: str, item_sep: str, exclude_keys: list[str]
) -> str:
    """``hydra.job.override_dirname`` for a job's parsed overrides, as Hydra computes it
    when it composes a job (runner/compose.py sets it on a job composed without Hydra).
    Hydra exposes no public function for it; on a Hydra this was not written for, the
    directory name is left empty, which only a ``hydra.sweep.subdir`` naming it uses."""
    if not _written_for("hydra-core", ("1.3.",), "the override_dirname of composed jobs"):
        return ""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    task = [o for o in overrides if not o.is_hydra_override()]
    return get_overrides_dirname(
        overrides=task, kv_sep=kv_sep, item_sep=item_sep, exclude_keys=exclude_keys
    )


@contextmanager
def keras_saving_without_tensorflow() -> Iterator[None]:
    """Save a Keras model on JAX without importing TensorFlow.

    Keras's serialisation asks whether TensorFlow can be imported, to recognise its
    ``TensorShape``, ``DType`` and ``TypeSpec`` objects in a model's config, and so imports
    it wherever it is installed: seconds, and a framework that a JAX process otherwise never
    loads. A JAX model's config holds none of them, so for the time of the save Keras's lazy
    handle on TensorFlow says it is not there. On TensorFlow nothing changes; on a Keras
    whose handle works otherwise, the save imports TensorFlow as Keras does."""
    import keras

    if keras.backend.backend() == "tensorflow" or not _written_for(
        "keras", ("3.",), "saving a model without TensorFlow"
    ):
        yield
        return
    from keras.src.utils import module_utils

    handle = module_utils.tensorflow
    # From the instance: where the attribute is missing, the handle's lookup imports TensorFlow.
    before = vars(handle).get("_available")
    handle._available = False
    try:
        yield
    finally:
        handle._available = before


def loky_workers_end_their_jobs_before_being_killed() -> None:
    """Give joblib's workers time to end their jobs' runs before they are killed.

    A sweep stopped by Ctrl-C or SIGTERM inside ``joblib.Parallel`` shuts joblib's loky
    executor down with ``kill_workers=True``, and loky SIGKILLs every worker at once (as it
    does when one of them has died): a job killed while it ends its run leaves that run
    RUNNING, and a worker that the signal did not reach never ends its run at all. loky
    takes no grace period, so each worker is first sent SIGTERM, which ends its job's run
    KILLED and the worker with it (runner.stop), and loky kills only what is still there
    :data:`runner.stop.GRACE` seconds later."""
    if not _written_for("joblib", ("1.5.", "1.6."), "the graceful stop of joblib's workers"):
        return
    from joblib.externals.loky.process_executor import _ExecutorManagerThread

    from runner import stop

    kill_workers = _ExecutorManagerThread.kill_workers
    if getattr(kill_workers, "__wrapped__", None) is not None:  # by an earlier sweep
        return

    @functools.wraps(kill_workers)
    def ending_their_jobs_first(manager: _ExecutorManagerThread, reason: str = "") -> None:
        stop.end_processes(list(manager.processes.values()))
        kill_workers(manager, reason)

    _ExecutorManagerThread.kill_workers = ending_their_jobs_first


def submitit_local_jobs_take_ctrl_c_themselves() -> None:
    """Start submitit's local job controllers with SIGINT blocked, and keep them for the
    sweep's process to stop (:data:`runner.stop.workers`).

    Each local job runs under a controller process of its own, in the terminal's process
    group. On Ctrl-C the controller prints a KeyboardInterrupt traceback and kills its job
    a second later, often before the job has ended its run. A blocked signal is inherited
    through exec, so the controller never takes Ctrl-C; its job unblocks it when it installs
    its handlers (runner.stop.install) and ends its run KILLED. SIGTERM, which the
    controller passes on to its job, is how the sweep's process stops the jobs otherwise.
    The sweep's process blocks SIGINT only while it starts a controller: one that comes
    then is delivered right after, not lost."""
    if not _written_for("submitit", ("1.5.",), "the local jobs' handling of Ctrl-C"):
        return
    from submitit.local import local

    from runner import stop

    start_controller = local.start_controller
    if getattr(start_controller, "__wrapped__", None) is not None:  # by an earlier sweep
        return

    @functools.wraps(start_controller)
    def blocking_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            controller = start_controller(*args, **kwargs)
            stop.workers.append(controller)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return controller

    local.start_controller = blocking_ctrl_c
