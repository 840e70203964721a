"""multiprocessing's internals: what an exiting interpreter does for it."""

from __future__ import annotations

import platform

from runner.compat import written_for

PYTHON = ("3.10", "3.11", "3.12", "3.13", "3.14")


def free_semaphores() -> None:
    """What an exiting interpreter does for multiprocessing, and multiprocessing's own child
    processes do before their ``os._exit``: free its semaphores (tqdm's lock is one), which
    the resource tracker that a worker shares with the sweep's process would otherwise
    report as leaked when the sweep ends. Guarded by Python's version, as the standard
    library is. Fallback: nothing, and the tracker reports the leak at the sweep's end."""
    if not written_for(
        "python", PYTHON, "freeing a worker's semaphores", platform.python_version()
    ):
        return
    from multiprocessing import util

    util._exit_function()
