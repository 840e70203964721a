"""What every loader returns: a whole dataset as plain arrays (:class:`Raw`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runner.config import DatasetConfig, Task


@dataclass
class Raw:
    """Features, targets and task of a whole dataset, before any split. ``source`` says
    where the data came from, for the record of the run."""

    x: np.ndarray
    y: np.ndarray
    task: Task
    source: dict[str, str]
    # Images: (height, width, channels), each row of x one image flattened in that order.
    image_shape: tuple[int, int, int] | None = None


Loader = Callable[[DatasetConfig], Raw]
