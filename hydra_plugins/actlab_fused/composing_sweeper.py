"""``hydra/sweeper=composing``: Hydra's basic grid sweeper, composing each job's config
quickly (runner/compose.py) instead of from scratch, and handing the configs it composed
to the fused launcher, which would otherwise compose each job a second time.

No ``from __future__ import annotations`` here: Hydra loads plugin modules without putting
them in ``sys.modules``, where ``dataclass`` would then look up the string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, Optional  # noqa: UP035  (Hydra's structured configs need typing's)

# Hydra's grid sweeper has no public import path; its sweep logic is reused as it is.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class ComposingSweeperConf:
    _target_: str = "hydra_plugins.actlab_fused.composing_sweeper.ComposingSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="composing", node=ComposingSweeperConf, provider="actlab"
)


class ComposingSweeper(BasicSweeper):
    composer = None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from runner.compose import Composer

        if self.composer is None:
            self.composer = Composer(self.hydra_context.config_loader, self.config)
        keep = getattr(self.launcher, "composed", None)
        for overrides in batch:
            config = self.composer.compose(overrides)
            if keep is not None:
                keep[tuple(overrides)] = config
