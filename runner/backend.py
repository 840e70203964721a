"""The process's Keras backend, device and threads, fixed before Keras is first imported.

Keras reads ``KERAS_BACKEND`` once, at its import, and JAX and TensorFlow each fix their
devices and thread pools when they start; so a process keeps the first choice it makes,
and a job asking for another is refused with a message instead of silently getting the
first. Nothing here imports Keras, JAX or TensorFlow until a job has asked for them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.config import UserError

log = logging.getLogger(__name__)

BACKENDS = ("jax", "tensorflow")


def quiet() -> None:
    """Keep the frameworks' start-up banners (TensorFlow's oneDNN and CPU-feature notes,
    absl's pre-init warnings) off the console; their real warnings still come through."""
    # TensorFlow's C++ log: 1 hides its INFO lines, the banners among them, and keeps its
    # warnings and errors (2 would hide the warnings too). absl's note that it logs to
    # stderr before its init comes with the first line shown, so only with a warning.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    # JAX's note that it found no TPU, at INFO, under Hydra's INFO root logger.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def use(backend: str, device: str, threads: int | None, chosen: dict) -> str:
    """Set up ``backend`` on ``device`` (auto, cpu or gpu) with ``threads`` CPU threads (None:
    all cores) and return the device jobs will train on, ``gpu`` or ``cpu``. ``chosen``: the
    (backend, device, threads) this process was set up with, and the device it got. Asking
    again for the same is free; asking for anything else in the same process is a
    :class:`UserError`."""
    request = (backend, device, threads)
    if chosen:
        first = next(iter(chosen))
        if request not in chosen:
            raise UserError(
                f"backend={backend} device={device} train.threads={threads} cannot follow "
                f"backend={first[0]} device={first[1]} train.threads={first[2]} in the same "
                "process: Keras, JAX and TensorFlow fix their backend, devices and threads "
                "once. Sweep them in separate runs, or with hydra/launcher=joblib."
            )
        return chosen[request]
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        raise UserError(
            f"backend={backend}, but this process imported Keras with backend="
            f"{loaded.backend.backend()} already; a process keeps its backend. Run it apart."
        )
    quiet()
    os.environ["KERAS_BACKEND"] = backend
    used = _jax(device, threads) if backend == "jax" else _tensorflow(device, threads)
    chosen[request] = used
    return used


def _jax(device: str, threads: int | None) -> str:
    if "jax" not in sys.modules:
        if device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        if threads == 1:
            # XLA's CPU client has no setting for N threads, only for one.
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        # Compiled programs persist across processes: a job that a sweep's earlier process
        # compiled starts without compiling.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir() / "jax"))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    import jax

    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    gpus = jax_gpus(jax) if device != "cpu" else []
    if device == "gpu" and not gpus:
        raise UserError(
            "device=gpu, but JAX sees no GPU on this machine (no CUDA build of jaxlib, or no "
            "CUDA-capable device or driver; `make install-gpu` installs the CUDA build). Use "
            "device=auto to train on the GPU when there is one, or device=cpu."
        )
    return "gpu" if gpus else "cpu"


def memory_bytes(backend: str, device: str) -> int | None:
    """The memory a model trains in: a JAX GPU's, or the machine's; None where it cannot
    be told (a TensorFlow GPU)."""
    if device == "gpu":
        if backend != "jax":
            return None
        import jax

        return (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def jax_gpus(jax) -> list:
    """The GPUs that JAX sees; none without a GPU platform or device."""
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU platform in this jaxlib, or no device for it
        return []


def _tensorflow(device: str, threads: int | None) -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise UserError(
            "device=gpu, but TensorFlow sees no GPU on this machine (no CUDA-capable device "
            "or driver). Use device=auto to train on the GPU when there is one, or device=cpu."
        )
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if device == "cpu" or not gpus:
        tf.config.set_visible_devices([], "GPU")
        return "cpu"
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return "gpu"


def cache_dir() -> Path:
    """Where programs are kept between processes, ``$XDG_CACHE_HOME/actlab``: XLA's compiled
    ones (JAX's persistent compilation cache) in ``jax/``, the engine's traced ones in
    ``programs/``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "actlab"


# How JAX says that an entry of its persistent compilation cache cannot be read. It then
# compiles again, but never rewrites the entry (it keeps an entry once written): every
# later process would compile it again, with one warning each.
DAMAGED_ENTRY = "Error reading persistent compilation cache entry for '(.*?)'"


@contextmanager
def cache_damage_said(said: set[str]) -> Iterator[None]:
    """Within the block, JAX's warnings about damaged cache entries become one line for the
    process (``said`` keeps the damaged programs it named) that says which folder to
    delete; every other warning is shown as it would be."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        _say_damage(caught, said)


def _say_damage(caught: list[warnings.WarningMessage], said: set[str]) -> None:
    damaged = []
    for warning in caught:
        found = re.match(DAMAGED_ENTRY, str(warning.message))
        if found is None:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        elif found.group(1) not in said:
            damaged.append(found.group(1))
    if damaged:
        said.update(damaged)
        folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir() / "jax"
        log.warning(
            "JAX's compilation cache %s has damaged entries (%s): they are compiled again "
            "in every process until the folder is deleted (rm -r %s)",
            folder,
            ", ".join(damaged),
            folder,
        )
