"""The range test's steps on JAX as one compiled program: Keras's ``stateless_call`` and
the optimizer's ``stateless_apply`` for one model, ``lax.scan`` over the steps, the rate of
each step set in the optimizer's state. Step for step what ``train_on_batch`` computes
(``tests/test_lr_find.py`` holds them equal), without its Python round trip per step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np


def jax_losses(net, loss: str, x: np.ndarray, y: np.ndarray, tried: np.ndarray, rows: list):
    """Each step's loss, training ``net`` (compiled with an optimizer whose rate is a
    variable) on the batch ``rows[i]`` at the rate ``tried[i]``, every step in one call."""
    optimizer = net.optimizer
    optimizer.build(net.trainable_variables)
    per_sample = keras.losses.get(loss)
    rate_at = next(i for i, v in enumerate(optimizer.variables) if v is optimizer.learning_rate)

    def step(state, inputs):
        trainable, non_trainable, opt_vars = state
        batch, rate, xs, ys = inputs
        xb, yb = xs[batch], ys[batch]

        def objective(trainable):
            p, non_trainable_after, penalties = net.stateless_call(
                trainable, non_trainable, xb, training=True, return_losses=True
            )
            # As train_on_batch: the loss with the kernels' penalties (model.l2) added.
            return jnp.mean(per_sample(yb, p)) + sum(penalties), non_trainable_after

        (value, non_trainable), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        opt_vars = [*opt_vars]
        opt_vars[rate_at] = rate.astype(opt_vars[rate_at].dtype)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), value

    @jax.jit
    def steps(state, batches, rates, xs, ys):
        def one(state, inputs):
            return step(state, (*inputs, xs, ys))

        return jax.lax.scan(one, state, (batches, rates))[1]

    state = tuple(
        [v.value for v in variables]
        for variables in (net.trainable_variables, net.non_trainable_variables, optimizer.variables)
    )
    return np.asarray(steps(state, np.stack(rows), tried.astype(np.float32), x, y), np.float64)
