"""One epoch of PC training: one XLA call, or a loop over one jitted step (conv nets on CPU).

On CPU, XLA computes a convolution's weight gradient far slower inside a
``lax.scan`` than outside it (jax-ml/jax#12868), so a conv net trains faster
with a Python loop over a jitted per-batch step; an MLP is as fast or faster
in one ``lax.scan`` per epoch (:func:`flax_pc.train_epoch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

import flax_pc as fpc

#: ``train_epoch(state, inputs, targets, rng) -> (state, metrics)``.
TrainEpoch = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, dict[str, Any]]]


def resolve(loop: str, conv: bool) -> Literal["epoch", "batch"]:
    """``loop`` (``config.loop``) with ``'auto'`` decided: ``'batch'`` for a conv net on CPU."""
    if loop != "auto":
        return "batch" if loop == "batch" else "epoch"
    return "batch" if conv and jax.default_backend() == "cpu" else "epoch"


def make_train_epoch(
    loop: Literal["epoch", "batch"], batch_size: int, batch_sharding: Any = None
) -> TrainEpoch:
    """:func:`flax_pc.train_epoch` for one run's batches, jitted, the state donated.

    Args:
      loop: ``'epoch'``: ``fpc.train_epoch``, one XLA call (a ``lax.scan``).
        ``'batch'``: a Python loop over one jitted step that gathers batch
        ``i`` on the device; the same batches, keys and stacked metrics, so
        the same result up to float rounding.
      batch_size: examples per train step.
      batch_sharding: where each batch lives (split over the devices).
    """
    if loop == "epoch":
        statics = ("batch_size", "batch_sharding")
        epoch = jax.jit(fpc.train_epoch, static_argnames=statics, donate_argnames="state")
        return functools.partial(epoch, batch_size=batch_size, batch_sharding=batch_sharding)

    @functools.partial(jax.jit, donate_argnames="state")
    def step(state, inputs, targets, indices, keys, i):
        batch = (inputs[indices[i]], targets[indices[i]])
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return state.train_step(*batch, rng=keys[i])

    def train_epoch(state, inputs, targets, rng):
        indices, keys = _epoch_batches(rng, inputs.shape[0], batch_size)
        metrics = []
        for i in range(indices.shape[0]):
            state, batch_metrics = step(state, inputs, targets, indices, keys, i)
            metrics.append(batch_metrics)
        return state, jax.tree_util.tree_map(lambda *m: jnp.stack(m), *metrics)

    return train_epoch


_epoch_batches = jax.jit(fpc.epoch_batches, static_argnums=(1, 2))
