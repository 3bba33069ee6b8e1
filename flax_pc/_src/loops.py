"""Whole-epoch training under one ``jax.jit``: no Python loop, no host sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from flax_pc._src import batches
from flax_pc._src.rngs import RNG_STREAMS, as_key, as_rngs
from flax_pc._src.train_state import PCTrainState
from flax_pc._src.types import Array, PyTree

__all__ = ["epoch_batches", "train_epoch"]


def epoch_batches(
    rng: Array | int,
    num_examples: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    step: Array | int | None = None,
) -> tuple[Array, Array]:
    """The batches of an epoch of :func:`train_epoch`, and a key for each.

    For a loop of your own that must see what ``train_epoch`` sees (e.g. a
    per-batch ``jax.jit(state.train_step)`` loop for conv nets on CPU): call
    ``state.train_step(x[indices[i]], y[indices[i]], rng=keys[i])``.

    Args:
      rng: the epoch's key or int seed (as given to ``train_epoch``).
      num_examples: ``N``, the size of the data set.
      batch_size: examples per batch; the last ``N % batch_size`` are dropped.
      shuffle: a new order drawn from ``rng`` (else in order).
      step: for an int seed, ``state.step`` at the epoch's start, which
        ``train_epoch`` folds into the seed's key (so one seed gives every
        epoch a new order); a key is used as given.

    Returns:
      ``(indices, keys)``: ``[N // batch_size, batch_size]`` example indices
      and one PRNG key per batch.
    """
    num_batches = num_examples // batch_size
    order_key, batch_key = jax.random.split(as_key(rng, "rng", step=step))
    if shuffle:
        order = jax.random.permutation(order_key, num_examples)
    else:
        order = jnp.arange(num_examples)
    batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)
    return batches, jax.random.split(batch_key, num_batches)


def train_epoch(
    state: PCTrainState,
    inputs: PyTree,
    targets: PyTree,
    rng: Array | int,
    *,
    batch_size: int,
    shuffle: bool = True,
    rng_streams: Sequence[str] = RNG_STREAMS,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[PCTrainState, dict[str, Any]]:
    """Trains one epoch over device-resident data with ``lax.scan``.

    The data set is split into ``len(inputs) // batch_size`` batches (the last
    partial batch is dropped, so every batch has the same shape and the step
    compiles once); each batch is gathered on the device inside the scan, so
    there is no host-to-device copy per batch. Jit it once::

        epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size", "shuffle"),
                        donate_argnames=("state",))
        state, metrics = epoch(state, x_train, y_train, key, batch_size=256)

    On CPU, convolution weight gradients run on a slow path inside
    ``lax.scan`` (jax-ml/jax#12868): for conv nets on CPU, a per-batch
    ``jax.jit(state.train_step)`` loop is several times faster. The
    model state (``state.model_state``, e.g. BatchNorm's running averages)
    is carried from batch to batch.

    Args:
      state: the train state.
      inputs: the whole training set, ``[N, ...]`` (or any pytree of arrays
        sharing the leading axis ``N``), ideally already on device.
      targets: ``[N, *out_features]`` (or any pytree of arrays ``[N, ...]``).
      rng: PRNG key, split into the shuffling key and one key per batch,
        from which each of ``rng_streams`` gets its own key for that batch:
        pass a new key per epoch. An int seed is ``jax.random.key(seed)``
        folded with ``state.step``, so one seed gives every epoch a new order
        and new masks.
      batch_size: examples per batch, ``1 <= batch_size <= N``.
      shuffle: draw a new order of the examples from ``rng`` (else in order).
      rng_streams: the RNG streams the model draws from; default node
        initialisation and Langevin noise (``'pc_noise'``, :data:`~flax_pc.NOISE`) and
        ``'dropout'``.
      batch_sharding: where each gathered batch lives, e.g.
        :attr:`flax_pc.DataParallel.batch_sharding` to split every batch over
        the devices (static: list it in ``static_argnames``). Without it, XLA
        may gather each batch whole onto every device.

    Returns:
      ``(state, metrics)``: each entry of ``train_step``'s metrics stacked
      over the batches (leading axis ``N // batch_size``).
    """
    # Host arrays (numpy) too: indexing them with traced indices needs jax arrays.
    inputs, targets = batches.as_arrays(inputs), batches.as_arrays(targets)
    num_examples = batches.check_batch(inputs, targets)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size {batch_size} is larger than the data set ({num_examples} examples)."
        )
    order, batch_keys = epoch_batches(
        rng, num_examples, batch_size, shuffle=shuffle, step=state.step
    )

    def step(state, batch):
        indices, key = batch
        rngs = as_rngs(key, rng_streams)
        batch = jax.tree_util.tree_map(lambda data: data[indices], (inputs, targets))
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return state.train_step(*batch, rng=rngs)

    return jax.lax.scan(step, state, (order, batch_keys))
