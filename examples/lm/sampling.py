"""Text from the plain model: characters drawn one at a time at a temperature."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples.lm.text import Vocabulary


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_chars", "context", "banned"))
def _sample_ids(
    params: Any,
    prompt: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    *,
    apply_fn: Any,
    num_chars: int,
    context: int,
    banned: int | None,
) -> jax.Array:
    """``prompt`` ``[P]`` followed by ``num_chars`` drawn ids: ``[P + num_chars]`` int32.

    Each step reads the last ``context`` ids (fewer at first) and draws the next
    from ``softmax(logits / temperature)`` with ``fold_in(key, step)``; the id
    ``banned`` (the unknown character) is never drawn.
    """
    length = prompt.shape[0]
    ids = jnp.zeros(length + num_chars, jnp.int32).at[:length].set(prompt)

    def step(i, ids):  # ids[: length + i] are known
        known = length + i
        start = jnp.maximum(known - context, 0)
        window = jax.lax.dynamic_slice(ids, (start,), (min(context, ids.shape[0]),))
        logits = apply_fn({"params": params}, window[None])[0, known - 1 - start]
        if banned is not None:
            logits = logits.at[banned].set(-jnp.inf)
        draw = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature)
        return ids.at[known].set(draw.astype(jnp.int32))

    return jax.lax.fori_loop(0, num_chars, step, ids)


def sample(
    apply_fn: Any,
    params: Any,
    vocab: Vocabulary,
    prompt: str,
    *,
    num_chars: int,
    temperature: float,
    context: int,
    key: jax.Array,
) -> str:
    """``prompt`` and ``num_chars`` characters drawn after it from the plain model.

    ``apply_fn({'params': params}, ids [1, L])`` gives logits ``[1, L, vocab.size]``
    for windows of up to ``context`` ids; the draws are fixed by ``key``. Only
    characters of ``vocab.chars`` are drawn.
    """
    ids = _sample_ids(
        params,
        jnp.asarray(vocab.encode(prompt)),
        key,
        jnp.float32(temperature),
        apply_fn=apply_fn,
        num_chars=num_chars,
        context=context,
        banned=vocab.unknown_id if vocab.unknown else None,
    )
    return vocab.decode(np.asarray(ids))
