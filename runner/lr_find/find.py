"""Range-test planned jobs one after another: each job's own model, loss, optimizer, batch
size and seed on its training split; one MLflow run per job (role ``lr_find``) with the
curve as metrics, step = the step's index; one figure and one CSV of every curve."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig

from runner.config import UserError
from runner.jobs.plan import Plan, plan
from runner.jobs.spec import JobContext
from runner.lr_find import FIGURE, ROLE, range_test

log = logging.getLogger("runner")


def plan_all(cfgs: list[DictConfig]) -> list[Plan]:
    """Every configuration checked and planned (its data loaded) before any is tested:
    a bad value in the last one refuses them all, and no run exists yet."""
    backends = {cfg.backend for cfg in cfgs}
    if len(backends) > 1:
        raise UserError(
            f"backend={','.join(sorted(backends))}: a process keeps the backend it started "
            "with; run lr_find once per backend."
        )
    return [plan(cfg, JobContext()) for cfg in cfgs]


def curve_of(job: Plan, tried: np.ndarray) -> range_test.Curve:
    """The range test of the job's freshly built model (its seed's initial weights), with
    its loss and optimizer, on its training split only, in batches of its batch size: on
    JAX every step in one compiled program, on TensorFlow by Keras's ``train_on_batch``."""
    from runner.data import encode_targets
    from runner.engine.common import make_optimizer, mixed
    from runner.jobs.execute import build, fresh_keras

    spec, data = job.spec, job.dataset
    fresh_keras()
    net = build(job)
    net.compile(optimizer=make_optimizer(spec.optimizer, float(tried[0])), loss=spec.loss)
    y = encode_targets(data.y_train, spec.model.head.encoding, data.classes)
    rows = range_test.batches(len(y), spec.training.batch_size, len(tried), spec.seed)
    # A float16 model's loss scaling is Keras's own business: train_on_batch does it.
    if spec.compute.backend == "jax" and not mixed(net):
        from runner.lr_find.jax_steps import jax_losses

        losses = jax_losses(net, spec.loss, data.x_train, y, tried, rows)
    else:
        losses = range_test.keras_losses(net, data.x_train, y, tried, rows)
    return range_test.curve(losses, tried)


def figure(curves: dict[str, range_test.Curve]) -> Figure:
    """Each configuration's smoothed loss against the rate (log scale), its raw loss faint
    beneath, and its suggested rate as a dot."""
    drawn = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(drawn)
    ax = drawn.subplots()
    for label, curve in curves.items():
        (line,) = ax.plot(curve.rates, curve.smoothed, label=label)
        ax.plot(curve.rates, curve.losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
        if np.isfinite(curve.suggested):
            at = int(np.argmin(np.abs(np.log(curve.rates / curve.suggested))))
            ax.plot([curve.rates[at]], [curve.smoothed[at]], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed; dots: suggested rate)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    drawn.suptitle("Learning-rate range test, training split", fontsize="medium")
    return drawn


def record(job: Plan, curve: range_test.Curve, settings: dict[str, float], image: bytes) -> None:
    """The job's lr_find run: its params and the test's, the curve per step, the suggested
    rate, the figure."""
    spec = job.spec
    tags = {"task": str(spec.task)}
    with job.tracker.open_run(job.experiment_id, f"lr_find {spec.label}", tags, role=ROLE) as run:
        run.log_params({**spec.params, **settings})
        for step, values in enumerate(zip(curve.rates, curve.losses, curve.smoothed, strict=True)):
            rate, loss, smoothed = map(float, values)
            run.log_metrics(
                {"learning_rate": rate, "loss": loss, "smoothed_loss": smoothed}, step=step
            )
        run.log_metrics(
            {"suggested_learning_rate": curve.suggested, "min_loss_learning_rate": curve.minimum}
        )
        run.log_files({FIGURE: image})


def find(plans: list[Plan], steps: int, low: float, high: float, out: Path) -> None:
    """Range-test each job, print its suggested rate, write ``lr_find.png`` and
    ``lr_find.csv`` into ``out`` and record one run per job."""
    tried = range_test.rates(low, high, steps)
    curves = {job.spec.label: curve_of(job, tried) for job in plans}
    out.mkdir(parents=True, exist_ok=True)
    # Rendered once, for the folder and every run.
    image = io.BytesIO()
    figure(curves).savefig(image, format="png")
    (out / FIGURE).write_bytes(image.getvalue())
    rows = [
        {"configuration": label, "step": i, "learning_rate": r, "loss": v, "smoothed_loss": s}
        for label, c in curves.items()
        for i, (r, v, s) in enumerate(zip(c.rates, c.losses, c.smoothed, strict=True))
    ]
    pd.DataFrame(rows).to_csv(out / "lr_find.csv", index=False)
    settings = {"lr_find.steps": steps, "lr_find.min_lr": low, "lr_find.max_lr": high}
    for job, curve in zip(plans, curves.values(), strict=True):
        record(job, curve, settings, image.getvalue())
    for job in plans:
        job.tracker.wait()
    width = max(len(label) for label in curves)
    print(f"{'configuration':<{width}}  suggested  (minimum / 10)  steps")
    for label, curve in curves.items():
        print(
            f"{label:<{width}}  {curve.suggested:9.3g}  ({curve.minimum / 10:12.3g})  "
            f"{len(curve.rates)}"
        )
    print(f"wrote {out / FIGURE}, {out / 'lr_find.csv'}", file=sys.stderr)
