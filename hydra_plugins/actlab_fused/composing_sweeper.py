"""``hydra/sweeper=composing``: Hydra's basic grid sweeper, composing each job's config
quickly (runner/compose.py) instead of from scratch, and handing the configs it composed
to the fused launcher (its ``use_composed``), which would otherwise compose each job a
second time. On a Hydra that runner/compat/hydra.py was not written for, it is Hydra's
grid sweeper as it is.

No ``from __future__ import annotations`` here: Hydra loads plugin modules without putting
them in ``sys.modules``, where ``dataclass`` would then look up the string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, Optional  # noqa: UP035  (Hydra's structured configs need typing's)

from hydra.core.config_store import ConfigStore

from runner.compat.hydra import grid_sweeper

# Hydra's grid sweeper, whose sweep logic is reused as it is.
GridSweeper, QUICK = grid_sweeper()


@dataclass
class ComposingSweeperConf:
    _target_: str = "hydra_plugins.actlab_fused.composing_sweeper.ComposingSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="composing", node=ComposingSweeperConf, provider="actlab"
)


class ComposingSweeper(GridSweeper):
    composer = None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Check the batch as Hydra does, by composing each job's config: quickly, and the
        configs go to a launcher that takes them."""
        if not QUICK:
            return super().validate_batch_is_legal(batch)
        from runner.compose import Composer

        if self.composer is None:
            self.composer = Composer(self.hydra_context.config_loader, self.config)
        take = getattr(self.launcher, "use_composed", None)
        for overrides in batch:
            config = self.composer.compose(overrides)
            if take is not None:
                take(overrides, config)
