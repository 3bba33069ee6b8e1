"""A decoder-only pre-LayerNorm Transformer over characters, written as Flax's lm1b writes it.

Token embedding plus learned positions, then blocks of ``LayerNorm ->
causal self-attention -> residual`` and ``LayerNorm -> Dense -> relu -> Dense
-> residual``, a final LayerNorm and a Dense to the logits. The model has no
``PCNode``: ``train.py`` trains it by predictive coding through
:func:`flax_pc.with_nodes`, which puts a value node on each activation that a
Dense layer reads; called with params only, it is the plain network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class MlpBlock(nn.Module):
    """``Dense(mlp_dim) -> relu -> Dense(features)`` (lm1b's MlpBlock)."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(nn.Dense(self.mlp_dim)(x))
        return nn.Dense(x.shape[-1])(y)


class DecoderBlock(nn.Module):
    """Pre-LayerNorm causal self-attention and MLP, each with a residual connection."""

    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, mask=mask)
        x = x + y
        return x + MlpBlock(self.mlp_dim)(nn.LayerNorm()(x))


class CharTransformer(nn.Module):
    """Next-character logits for each position of a window of characters.

    Attributes:
      vocab_size: ids in ``[0, vocab_size)``; also the number of logits.
      context_length: the longest window (the learned positions' count).
      num_layers: decoder blocks.
      width: the embedding and residual width (a multiple of ``num_heads``).
      num_heads: attention heads.
      mlp_dim: the hidden width of each block's MLP.
    """

    vocab_size: int
    context_length: int = 128
    num_layers: int = 2
    width: int = 64
    num_heads: int = 8
    mlp_dim: int = 256

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """``tokens`` ``[B, L]`` int (``L <= context_length``) -> logits ``[B, L, vocab_size]``;
        position ``i`` sees the tokens ``0..i`` only."""
        x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens)
        positions = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, self.context_length, self.width)
        )
        x = x + positions[:, : tokens.shape[1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.num_layers):
            x = DecoderBlock(self.num_heads, self.mlp_dim, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(name="final_norm")(x)
        return nn.Dense(self.vocab_size, name="logits")(x).astype(jnp.float32)
