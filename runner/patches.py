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
    """Start submitit's local job controllers with SIGINT blocked, and let the sweep's
    process stop them (:data:`runner.stop.stoppers`).

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
    controllers = []

    @functools.wraps(start_controller)
    def blocking_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            controller = start_controller(*args, **kwargs)
            controllers.append(controller)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return controller

    def end_controllers() -> None:
        stop.end_processes(controllers)
        for controller in controllers:
            if controller.poll() is None:
                stop.kill(controller)

    local.start_controller = blocking_ctrl_c
    stop.stoppers.append(end_controllers)


def ray_jobs_cancelled_on_a_stop() -> None:
    """Let the sweep's process cancel its Ray jobs on Ctrl-C or SIGTERM
    (:data:`runner.stop.stoppers`).

    Hydra's Ray launcher hands every job to Ray at once and keeps their references to
    itself, so the sweep's process would exit on a signal, and Ray's shutdown then kill
    each job in the middle of its run (Ray's workers are in process groups of their own:
    the terminal's Ctrl-C does not reach them). Each job's reference is kept here; on a
    stop the jobs are cancelled, those not started first, as a job that ends frees its CPU
    for the next in line: one that has not started never does, and one that is training
    gets a KeyboardInterrupt, which ends its run KILLED. Ray's start also puts a SIGTERM
    handler of its own in the sweep's process, which aborts it at once: the runner's are
    put back."""
    if not _written_for("hydra-ray-launcher", ("1.2.",), "the cancelling of Ray jobs"):
        return
    from hydra_plugins.hydra_ray_launcher import _core

    from runner import stop

    launch_job_on_ray, start_ray = _core.launch_job_on_ray, _core.start_ray
    if getattr(launch_job_on_ray, "__wrapped__", None) is not None:  # by an earlier sweep
        return
    jobs = []

    @functools.wraps(start_ray)
    def keeping_the_handlers(*args: Any, **kwargs: Any) -> None:
        start_ray(*args, **kwargs)
        stop.install()

    @functools.wraps(launch_job_on_ray)
    def keeping_the_job(*args: Any, **kwargs: Any) -> Any:
        job = launch_job_on_ray(*args, **kwargs)
        jobs.append(job)
        return job

    def cancel_jobs() -> None:
        import ray

        for job in reversed(jobs):
            ray.cancel(job)
        ray.wait(jobs, num_returns=len(jobs), timeout=stop.GRACE, fetch_local=False)

    _core.start_ray = keeping_the_handlers
    _core.launch_job_on_ray = keeping_the_job
    stop.stoppers.append(cancel_jobs)


# Run ids per query of MLflow's bulk history: well under SQLite's 32,766 bound parameters.
HISTORY_CHUNK = 500


def mlflow_histories(
    client: Any, run_ids: list[str], key: str
) -> dict[str, list[tuple[int, float]]] | None:
    """Each run's (step, value) of the metric ``key``, for many runs in one query a chunk,
    from the store behind MLflow's ``client``: its SQL store's ``get_metric_history_bulk``,
    which its server answers the UI's charts with. Its client has no public bulk read, and
    one ``get_metric_history`` per run is where a comparison of thousands of runs spends
    its time: SQLite plans that query over every run's values of ``key`` (2,400 runs: 7 ms
    each, against 2 s for the lot in bulk). None on another store, or an MLflow this was
    not written for: the caller reads run by run."""
    if not _written_for("mlflow", ("3.",), "reading metric histories in bulk"):
        return None
    store = client._tracking_client.store
    if not hasattr(store, "get_metric_history_bulk") or not hasattr(store, "engine"):
        return None
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), HISTORY_CHUNK):
        chunk = run_ids[start : start + HISTORY_CHUNK]
        # No bound: every value of each run is wanted.
        for point in store.get_metric_history_bulk(chunk, key, max_results=2**62):
            found[point.run_id].append((point.step, point.value))
    return found
