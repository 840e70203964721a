"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", §3.3): train a job's freshly built model for a few hundred steps on its training
split, the rate growing geometrically from ``low`` to ``high``, and read the loss against
the rate. Backend-free: Keras's ``train_on_batch``, one step at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The exponential moving average that smooths the loss per step: about the last 10 steps,
# a fifth of a decade of rates at the default 300 steps over six decades (fastai's 0.98,
# meant for 100 steps, would lag the curve by a decade here).
SMOOTHING = 0.9
# The first tenth of the steps is left out of the slope: the average has seen too few
# batches there, and the loss has not started to move.
SETTLING = 0.1
# The test stops once the smoothed loss exceeds its minimum by this factor: it has diverged.
DIVERGED = 4.0


@dataclass(frozen=True)
class Curve:
    """The rates tried, one per step, the loss of each step's batch, and its smoothed
    value; ``suggested``: the rate :func:`suggest` picks, ``minimum``: the rate of the
    smoothed loss's minimum."""

    rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggested: float
    minimum: float


def rates(low: float, high: float, steps: int) -> np.ndarray:
    """``steps`` rates from ``low`` to ``high``, each the last times the same factor."""
    return np.geomspace(low, high, steps)


def smooth(losses: np.ndarray) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses`` (:data:`SMOOTHING`)."""
    found, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        found.append(average / (1 - SMOOTHING**i))
    return np.asarray(found)


def suggest(tried: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """The suggested rate and the rate of the smoothed loss's minimum. The suggestion is
    where the smoothed loss falls fastest against the log of the rate, between the first
    :data:`SETTLING` of the steps and its minimum: the middle of the range where a larger
    rate still helps. When the minimum comes too early for a slope (under 3 steps after
    the settling ones), it is the minimum's rate / 10."""
    lowest = int(np.nanargmin(smoothed))
    minimum = float(tried[lowest])
    first = int(len(tried) * SETTLING)
    if lowest - first < 3:
        return minimum / 10, minimum
    part = slice(first, lowest + 1)
    slope = np.gradient(smoothed[part], np.log(tried[part]))
    return float(tried[first + int(np.argmin(slope))]), minimum


def batches(samples: int, size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of ``size`` row indices (all rows when fewer): passes over a
    shuffled order, a new order each pass, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    size = min(size, samples)
    found: list[np.ndarray] = []
    while len(found) < steps:
        order = rng.permutation(samples)
        found += [order[i : i + size] for i in range(0, samples - size + 1, size)]
    return found[:steps]


def cut(losses: np.ndarray) -> int:
    """How many steps of ``losses`` the curve keeps: up to the first that is not finite, or
    whose smoothed loss exceeds :data:`DIVERGED` times the smoothed minimum so far."""
    average, best = 0.0, math.inf
    for i, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            return i - 1
        # As smooth() does, one step at a time.
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING**i)
        best = min(best, smoothed)
        if i > 1 and smoothed > DIVERGED * best:
            return i
    return len(losses)


def keras_losses(net, x: np.ndarray, y: np.ndarray, tried: np.ndarray, rows: list) -> np.ndarray:
    """Each step's loss, training ``net`` (compiled, its optimizer's rate a variable) with
    Keras's ``train_on_batch`` on the batch ``rows[i]`` at the rate ``tried[i]``; on any
    backend. It stops at the first loss that is not finite, as :func:`cut` would."""
    losses: list[float] = []
    for rate, batch in zip(tried, rows, strict=True):
        net.optimizer.learning_rate.assign(rate)
        losses.append(float(np.asarray(net.train_on_batch(x[batch], y[batch])).reshape(-1)[0]))
        if not math.isfinite(losses[-1]):
            break
    return np.asarray(losses)


def curve(losses: np.ndarray, tried: np.ndarray) -> Curve:
    """The curve of the steps :func:`cut` keeps, and its suggestion."""
    kept = losses[: cut(losses)]
    smoothed = smooth(kept)
    if not len(kept):
        return Curve(tried[:0], kept, smoothed, math.nan, math.nan)
    suggested, minimum = suggest(tried[: len(kept)], smoothed)
    return Curve(tried[: len(kept)], kept, smoothed, suggested, minimum)
