"""Random keys: what ``rng=`` accepts, and the streams a bare key feeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from flax_pc._src.nodes import NOISE
from flax_pc._src.types import RNG, Array

#: The RNG streams that a bare key feeds (each gets a key derived from it):
#: the nodes' noise (``PCNode(value_init='normal')``, :func:`~flax_pc.langevin`) and ``nn.Dropout``.
RNG_STREAMS: tuple[str, ...] = (NOISE, "dropout")


def as_rngs(
    rng: RNG | None, streams: Sequence[str] = RNG_STREAMS, *, step: Any = None
) -> dict[str, Array] | None:
    """Linen's ``rngs`` from a key, an int seed or a dict.

    Args:
      rng: ``None``; a PRNG key or an int seed, from which each of ``streams``
        gets its own derived key; or a dict ``{stream: key or seed}`` (linen's
        ``rngs=``). A key is used as given: a loop passes a new key per step.
      streams: the streams a bare key feeds (default :data:`RNG_STREAMS`).
      step: the training step, for an int seed (see :func:`as_key`).

    Returns:
      ``{stream: key}``, or ``None`` for ``rng=None``.

    Example:
      >>> import jax
      >>> sorted(as_rngs(jax.random.key(0)))
      ['dropout', 'pc_noise']
    """
    if rng is None:
        return None
    if isinstance(rng, Mapping):
        return {stream: as_key(key, f"rng[{stream!r}]", step=step) for stream, key in rng.items()}
    keys = jax.random.split(as_key(rng, "rng", step=step), len(streams))
    return {stream: keys[i] for i, stream in enumerate(streams)}


def as_key(rng: Any, name: str, *, step: Any = None) -> Array:
    """A PRNG key from a key or an int seed.

    An int seed is ``jax.random.key(seed)``, folded with ``step`` where one is
    given (``train_step`` and ``train_epoch`` give the state's step): like
    ``nnx.Rngs(seed)``, one seed then gives every step new keys (a new dropout
    mask, a new shuffle). A key is returned as it is.
    """
    if isinstance(rng, bool):
        raise TypeError(
            f"{name} must be a PRNG key (jax.random.key(0)) or an int seed, got {rng!r}."
        )
    shape, dtype = jnp.shape(rng), getattr(rng, "dtype", None)
    is_seed = isinstance(rng, int) or (
        dtype is not None and jnp.issubdtype(dtype, jnp.integer) and shape == ()
    )  # an int, or a traced int scalar
    if is_seed:
        key = jax.random.key(rng)
        return key if step is None else jax.random.fold_in(key, step)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
        return jnp.asarray(rng)
    if dtype == jnp.uint32 and shape == (2,):
        return jnp.asarray(rng)  # a raw key of jax.random.PRNGKey
    raise TypeError(
        f"{name} must be one PRNG key, jax.random.key(0), or an int seed; got "
        f"{type(rng).__name__} of shape {tuple(shape)}."
    )
