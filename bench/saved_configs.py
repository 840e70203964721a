"""A fused job's three saved configs (``.hydra/config.yaml``, ``hydra.yaml``,
``overrides.yaml``), written as Hydra writes them (``OmegaConf.to_yaml``) and as the fused
launcher does (runner/compat/omegaconf.py), alternated in one process: ms a job, and
whether the texts are the same.

The job: the default config with ``activation=tanh model.units=[128,64]``, composed by
Hydra with its Hydra node, as a sweep's job is.

    python bench/saved_configs.py [--jobs 200] [--repeats 3]
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

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.compat.hydra import _without_hydra
    from runner.compat.omegaconf import to_yaml
    from runner.config import CONF, register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        job = compose(
            "config", ["activation=tanh", "model.units=[128,64]"], return_hydra_config=True
        )
    saved = [_without_hydra(job), job.hydra, job.hydra.overrides.task]
    ways = {"OmegaConf.to_yaml": OmegaConf.to_yaml, "runner (libyaml)": to_yaml}
    texts = {name: [write(cfg) for cfg in saved] for name, write in ways.items()}
    ms: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, write in ways.items():
            start = time.perf_counter()
            for _ in range(args.jobs):
                for cfg in saved:
                    write(cfg)
            ms[name].append((time.perf_counter() - start) / args.jobs * 1000)
    for name in ways:
        print(f"{name:20s} {statistics.median(ms[name]):6.2f} ms a job")
    same = texts["OmegaConf.to_yaml"] == texts["runner (libyaml)"]
    print(f"same text: {same}; {sum(len(t) for t in texts['runner (libyaml)'])} characters a job")


if __name__ == "__main__":
    main()
