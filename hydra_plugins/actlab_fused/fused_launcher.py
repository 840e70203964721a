"""``hydra/launcher=fused``: Hydra finds this launcher in the ``hydra_plugins`` namespace
package. The work is in runner/fused.py, imported only when a sweep launches, so that
``--help`` stays fast.

No ``from __future__ import annotations`` here: Hydra loads plugin modules without putting
them in ``sys.modules``, where ``dataclass`` would then look up the string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class FusedLauncherConf:
    _target_: str = "hydra_plugins.actlab_fused.fused_launcher.FusedLauncher"
    # Most jobs trained as one batch. The engine also splits a batch that would not fit its
    # memory budget (a share of the GPU's memory, or a fixed budget on the CPU).
    max_group: int = 512


ConfigStore.instance().store(
    group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="actlab"
)


class FusedLauncher(Launcher):
    def __init__(self, max_group: int) -> None:
        if max_group < 1:
            raise ValueError(f"hydra.launcher.max_group={max_group}: it must be 1 or more")
        self.max_group = max_group
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        # Job configs by their overrides, from hydra/sweeper=composing (use_composed).
        self.composed: dict = {}
        # Whether it has said that the jobs run as the basic launcher runs them.
        self.said_basic = False

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.composed = {}

    def use_composed(self, overrides: Sequence[str], config: DictConfig) -> None:
        """Take the config of the job with ``overrides``, which the sweeper composed to
        check its batch, instead of composing it a second time."""
        self.composed[tuple(overrides)] = config

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from runner import fused

        return fused.launch(self, job_overrides, initial_job_idx)
