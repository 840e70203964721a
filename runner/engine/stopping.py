"""Early stopping on JAX, one member at a time: Keras's EarlyStopping callback, decided on
the host from the logs each epoch hands over, so that each member of a fused group stops on
its own (TensorFlow's engine uses Keras's callback itself)."""

from __future__ import annotations

import math

from runner.engine import EarlyStopping
from runner.metrics import lower_is_better


class Watch:
    """One member's early stopping, as Keras's callback decides it: the best value of
    ``monitor`` so far and its epoch, and the epochs since it last improved by more than
    ``min_delta``; the member stops once those reach ``patience`` (never after its first
    epoch)."""

    def __init__(self, rule: EarlyStopping):
        self.rule = rule
        self.lower = lower_is_better(rule.monitor)
        self.best = math.inf if self.lower else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0

    def _improves(self, value: float) -> bool:
        if self.lower:
            return value + self.rule.min_delta < self.best
        return value - self.rule.min_delta > self.best

    def update(self, epoch: int, logs: dict[str, float]) -> tuple[bool, bool]:
        """Take ``epoch``'s ``logs``: whether the member's weights of this epoch are its best
        so far (as Keras, the first epoch's are until one improves on them), and whether it
        stops here."""
        value = logs[self.rule.monitor]
        first = self.best_epoch is None
        if first:
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True, False
        return first, self.wait >= self.rule.patience and epoch > 0
