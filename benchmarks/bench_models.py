"""The benchmark networks as flax linen models with ``flax_pc.PCNode``s.

Each model has a twin in :mod:`plain_pc` (same layers, same order);
:func:`plain_names` lists the flax param names in the plain layer order so
:func:`plain_pc.weights_from_flax` can copy the weights across.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn

import flax_pc as fpc


class MLP(nn.Module):
    """``Dense -> tanh -> PCNode`` per hidden layer, then a linear ``Dense`` output."""

    hidden: Sequence[int] = (128, 128, 128)
    outputs: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, 784] -> [B, outputs]``."""
        for width in self.hidden:
            x = fpc.PCNode()(nn.tanh(nn.Dense(width)(x)))
        return nn.Dense(self.outputs)(x)


class VGG5(nn.Module):
    """pcx's VGG-5: four ``conv3x3 -> gelu -> max_pool 2x2 -> PCNode`` blocks, a ``Dense``."""

    channels: Sequence[int] = (128, 256, 512, 512)
    outputs: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, H, W, C] -> [B, outputs]``."""
        for c in self.channels:
            x = nn.Conv(c, (3, 3), padding="SAME")(x)
            x = nn.max_pool(nn.gelu(x), (2, 2), strides=(2, 2))
            x = fpc.PCNode()(x)
        return nn.Dense(self.outputs)(x.reshape(x.shape[0], -1))


def plain_names(model: nn.Module) -> list[str]:
    """The model's param names in layer order (what :mod:`plain_pc` expects)."""
    if isinstance(model, MLP):
        return [f"Dense_{i}" for i in range(len(model.hidden) + 1)]
    if isinstance(model, VGG5):
        return [f"Conv_{i}" for i in range(len(model.channels))] + ["Dense_0"]
    raise TypeError(f"no plain-JAX twin for {type(model).__name__}")
