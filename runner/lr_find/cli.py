"""``python -m runner.lr_find OVERRIDES [--steps N] [--min-lr R] [--max-lr R] [--out DIR]``:
the runner's overrides, each comma list one more configuration; every configuration is
checked before anything runs, then range-tested, printed, drawn and recorded."""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from runner.checks import check_group_overrides
from runner.config import CONF, UserError, register


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, and the runner's overrides as they are."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.lr_find",
        description="The learning-rate range test (Smith 2017) for each configuration the "
        "overrides give (activation=sigmoid,tanh,relu: three): a few hundred steps on the "
        "training split, the rate growing geometrically; prints the suggested rate, draws "
        "loss against rate and records one MLflow run per configuration. It suggests a "
        "rate; choosing one on validation is runner.compare --tune's job.",
    )
    parser.add_argument("overrides", nargs="*", help="the runner's overrides: key=value,...")
    parser.add_argument("--steps", type=int, default=300, help="steps (default: %(default)s)")
    parser.add_argument("--min-lr", type=float, default=1e-6, help="first rate (%(default)g)")
    parser.add_argument("--max-lr", type=float, default=1.0, help="last rate (%(default)g)")
    parser.add_argument("--out", default="lr_find", help="folder of lr_find.png and .csv")
    # Overrides and options in any order, as a user mixes them.
    args = parser.parse_intermixed_args(argv)
    if args.steps < 10:
        raise UserError(f"--steps {args.steps} is not allowed: give 10 or more steps.")
    low, high = args.min_lr, args.max_lr
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise UserError(
            f"--min-lr {low:g} --max-lr {high:g} is not allowed: give two finite rates, "
            "0 < min-lr < max-lr."
        )
    return args


def configurations(overrides: list[str]) -> list[list[str]]:
    """One list of overrides per combination of the comma lists (and sweeps such as
    ``range``) among ``overrides``, as Hydra's basic sweeper expands them."""
    check_group_overrides(overrides)
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [list(combination) for combination in itertools.product(*choices)]


def compose_all(overrides: list[str]) -> list[DictConfig]:
    """Each configuration composed by Hydra over the runner's schema, as the runner composes
    a job; a wrong key, type or value is a :class:`UserError`."""
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return [compose("config", overrides=o) for o in configurations(overrides)]
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(" ".join(str(error).split())) from None


def main(argv: list[str] | None = None) -> int:
    """Check every configuration, then range-test each (:func:`runner.lr_find.find.find`).
    A bad option, override or value is one line on stderr and exit 2, before any run."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(argv)
        cfgs = compose_all(args.overrides)
        from runner.lr_find.find import find, plan_all

        plans = plan_all(cfgs)
    except UserError as error:
        print(f"lr_find: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    find(plans, args.steps, args.min_lr, args.max_lr, Path(args.out))
    return 0


def cli() -> None:
    sys.exit(main())
