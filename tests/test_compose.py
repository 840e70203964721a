"""Quick composition of a sweep's jobs: each config equals the one Hydra composes itself."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from runner.compose import Composer
from runner.config import CONF

JOBS = [
    ["seed=3", "activation=tanh"],
    ["loss=mse", "seed=1", "optimizer.learning_rate=0.01"],
    ["loss=mse", "activation=[relu,tanh]", "model.units=[8,4]"],
    ["dataset=iris", "optimizer=sgd", "optimizer.momentum=0.9", "tracking.experiment='it\\'s'"],
    ["+extra=1"],
    ["seed=0", "train.epochs=3", "hydra.job.name=other"],
]


@pytest.fixture
def hydra_loader():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", return_hydra_config=True)
        yield GlobalHydra.instance().config_loader(), master


def _plain(config) -> dict:
    container = OmegaConf.to_container(config, resolve=False)
    container["hydra"]["runtime"].pop("output_dir", None)
    return container


def test_each_composed_job_equals_hydras_own_composition(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for overrides in JOBS:
        fast = composer.compose(overrides)
        slow = loader.load_sweep_config(master, overrides)
        assert _plain(fast) == _plain(slow), overrides
    # The two choices of config groups were composed once each, however many jobs used them.
    assert set(composer.bases) <= {(), ("loss=mse",), ("dataset=iris", "optimizer=sgd")}


def test_jobs_of_one_base_are_copies_apart_with_hydras_types_and_flags(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    first, second = composer.compose(["seed=1"]), composer.compose(["seed=2"])
    slow = loader.load_sweep_config(master, ["seed=1"])
    for path in ("", "hydra", "train", "optimizer"):
        fast_node = OmegaConf.select(first, path) if path else first
        slow_node = OmegaConf.select(slow, path) if path else slow
        assert OmegaConf.get_type(fast_node) is OmegaConf.get_type(slow_node), path
        assert fast_node._metadata.flags == slow_node._metadata.flags, path
    with pytest.raises(Exception, match="epoch"):  # struct, as Hydra's: no new keys
        first.train.epoch = 3
    first.train.epochs = 99
    assert (first.seed, second.seed, second.train.epochs) == (1, 2, slow.train.epochs)


def test_a_value_hydra_would_refuse_gets_hydras_own_message(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for overrides in (["train.epochs=abc"], ["train.epoch=3"], ["loss=mse", "seed=x"]):
        with pytest.raises(Exception) as fast:
            composer.compose(overrides)
        with pytest.raises(Exception) as slow:
            loader.load_sweep_config(master, overrides)
        assert str(fast.value) == str(slow.value)


def test_a_sweep_with_the_composing_sweeper_records_its_jobs(cli, store):
    from tests.conftest import finished_sweep

    result = cli(
        "-m",
        "hydra/sweeper=composing",
        "hydra/launcher=fused",
        "dataset=iris",
        "activation=relu,tanh",
        "seed=0,1",
        "model.units=[8]",
        "train.epochs=2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _, children = finished_sweep(store, 4)
    assert sorted(zip(children["params.activation"], children["params.seed"], strict=True)) == [
        ("relu", "0"), ("relu", "1"), ("tanh", "0"), ("tanh", "1"),
    ]  # fmt: skip
