"""An epoch as a Python loop over one jitted step: how conv nets train fastest on CPU.

On CPU, XLA computes a convolution's weight gradient far slower inside a
``lax.scan`` than outside it (jax-ml/jax#12868), so ``config.loop='batch'``
(``'auto'`` for a conv net on CPU) trains with this loop instead of one
:func:`flax_pc.train_epoch` call. The same batches, keys and metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import flax_pc as fpc

epoch_batches = jax.jit(fpc.epoch_batches, static_argnums=(1, 2))


def make_train_epoch(batch_size: int, batch_sharding: Any = None) -> Callable[..., Any]:
    """``train_epoch(state, inputs, targets, rng) -> (state, metrics)``, as
    :func:`flax_pc.train_epoch`'s: one jitted step per batch, which it gathers on the device."""

    @functools.partial(jax.jit, donate_argnames="state")
    def step(state, inputs, targets, indices, keys, i):
        batch = (inputs[indices[i]], targets[indices[i]])
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return state.train_step(*batch, rng=keys[i])

    def train_epoch(state, inputs, targets, rng):
        indices, keys = epoch_batches(rng, inputs.shape[0], batch_size)
        metrics = []
        for i in range(indices.shape[0]):
            state, batch_metrics = step(state, inputs, targets, indices, keys, i)
            metrics.append(batch_metrics)
        return state, jax.tree_util.tree_map(lambda *m: jnp.stack(m), *metrics)

    return train_epoch
