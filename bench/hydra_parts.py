"""A fused job's own Hydra parts, as Hydra's ``run_job`` makes them and as the fused
launcher does (runner/compat/), alternated in one process, ms a job:

- its three saved configs (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``):
  ``OmegaConf.to_yaml`` against libyaml (runner/compat/omegaconf.py), and whether the texts
  are the same;
- ``HydraConfig``'s config for the job: ``HydraConfig.set_config`` (a copy of the Hydra
  node) against the node itself (``runner.compat.hydra._set_config``).

The job: the default config with ``activation=tanh model.units=[128,64]``, composed by
Hydra with its Hydra node, as a sweep's job is.

    python bench/hydra_parts.py [--jobs 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import copy

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from runner.compat.hydra import _set_config, _without_hydra
    from runner.compat.omegaconf import to_yaml
    from runner.config import CONF, register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        job = compose(
            "config", ["activation=tanh", "model.units=[128,64]"], return_hydra_config=True
        )
    saved = [_without_hydra(job), job.hydra, job.hydra.overrides.task]
    ways = {
        "saved configs, OmegaConf.to_yaml": lambda: [OmegaConf.to_yaml(c) for c in saved],
        "saved configs, libyaml": lambda: [to_yaml(c) for c in saved],
        "HydraConfig.set_config": lambda: HydraConfig.instance().set_config(jobs.pop()),
        "the node itself": lambda: _set_config(jobs.pop()),
    }
    ms: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            # Each job's config is its own, as in a sweep: copied before the clock starts.
            jobs = [copy.deepcopy(job) for _ in range(args.jobs)]
            start = time.perf_counter()
            for _ in range(args.jobs):
                way()
            ms[name].append((time.perf_counter() - start) / args.jobs * 1000)
    for name in ways:
        print(f"{name:34s} {statistics.median(ms[name]):6.2f} ms a job")
    texts = [OmegaConf.to_yaml(c) for c in saved], [to_yaml(c) for c in saved]
    print(f"same text: {texts[0] == texts[1]}; {sum(len(t) for t in texts[1])} characters a job")


if __name__ == "__main__":
    main()
