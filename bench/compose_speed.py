"""Composing a large sweep's job configs: Hydra's own composition of each job against
``runner.compose.Composer`` (each distinct choice of config groups composed once, each
job's values set with OmegaConf), in one process, on the 240 jobs of the fused-sweeps
issue (4 activations x 2 losses x 5 learning rates x 6 seeds). Prints ms per job.

    python bench/compose_speed.py [--jobs 240]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from runner.compose import Composer  # noqa: E402
from runner.config import CONF, register  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=240)
    args = parser.parse_args()
    register()
    grid = itertools.product(
        ("sigmoid", "tanh", "relu", "elu"),
        ("mse", "categorical_crossentropy"),
        (0.0003, 0.001, 0.003, 0.01, 0.03),
        range(6),
    )
    jobs = [
        [f"activation={a}", f"loss={loss}", f"optimizer.learning_rate={r}", f"seed={s}"]
        for a, loss, r, s in itertools.islice(grid, args.jobs)
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = compose("config", return_hydra_config=True)
        start = time.perf_counter()
        for overrides in jobs:
            loader.load_sweep_config(master, overrides)
        hydra = (time.perf_counter() - start) / len(jobs)
        composer = Composer(loader, master)
        start = time.perf_counter()
        for overrides in jobs:
            composer.compose(overrides)
        quick = (time.perf_counter() - start) / len(jobs)
    print(f"{len(jobs)} jobs: Hydra {hydra * 1000:.1f} ms a job, Composer {quick * 1000:.1f} ms")
    print(f"Composer: {quick * 1000:.1f} ms a job (target <= 20 ms); {hydra / quick:.1f}x faster")


if __name__ == "__main__":
    main()
