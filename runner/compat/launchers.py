"""The parallel launchers' internals: joblib's, submitit's and Ray's workers, stopped so
that each ends its job's run before it is gone (runner/stop.py)."""

from __future__ import annotations

import functools
import signal
from typing import Any

from runner import stop
from runner.compat import written_for


def loky_workers_end_their_jobs_first() -> None:
    """Give joblib's workers time to end their jobs' runs before they are killed.

    A sweep stopped by Ctrl-C or SIGTERM inside ``joblib.Parallel`` shuts joblib's loky
    executor down with ``kill_workers=True``, and loky SIGKILLs every worker at once (as it
    does when one of them has died): a job killed while it ends its run leaves that run
    RUNNING, and a worker that the signal did not reach never ends its run at all. loky
    takes no grace period, so each worker is first sent SIGTERM, which ends its job's run
    KILLED and the worker with it (runner.stop), and loky kills only what is still there
    :data:`runner.stop.GRACE` seconds later. Fallback: loky kills the workers at once, and a
    job killed while it trains leaves its run RUNNING until the next start ends it."""
    if not written_for("joblib", ("1.5", "1.6"), "the graceful stop of joblib's workers"):
        return
    from joblib.externals.loky.process_executor import _ExecutorManagerThread

    kill_workers = _ExecutorManagerThread.kill_workers
    if getattr(kill_workers, "__wrapped__", None) is not None:  # by an earlier sweep
        return

    @functools.wraps(kill_workers)
    def ending_their_jobs_first(manager: _ExecutorManagerThread, reason: str = "") -> None:
        stop.end_processes(list(manager.processes.values()))
        kill_workers(manager, reason)

    _ExecutorManagerThread.kill_workers = ending_their_jobs_first


def submitit_local_jobs_take_ctrl_c() -> None:
    """Start submitit's local job controllers with SIGINT blocked, and let the sweep's
    process stop them (:data:`runner.stop.stoppers`).

    Each local job runs under a controller process of its own, in the terminal's process
    group. On Ctrl-C the controller prints a KeyboardInterrupt traceback and kills its job
    a second later, often before the job has ended its run. A blocked signal is inherited
    through exec, so the controller never takes Ctrl-C; its job unblocks it when it installs
    its handlers (runner.stop.install) and ends its run KILLED. SIGTERM, which the
    controller passes on to its job, is how the sweep's process stops the jobs otherwise.
    The sweep's process blocks SIGINT only while it starts a controller: one that comes
    then is delivered right after, not lost. Fallback: submitit's own handling, whose
    controllers may kill a job before it has ended its run."""
    if not written_for("submitit", ("1.5",), "the local jobs' handling of Ctrl-C"):
        return
    from submitit.local import local

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
    put back. Fallback: Ray's own shutdown, which may kill jobs in the middle of a run."""
    if not written_for("hydra-ray-launcher", ("1.2",), "the cancelling of Ray jobs"):
        return
    from hydra_plugins.hydra_ray_launcher import _core

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
