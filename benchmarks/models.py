"""The benchmark networks as flax linen models with ``flax_pc.PCNode``s.

Each model has a twin in :mod:`plain_pc` (same layers, same order);
:func:`plain_names` lists the flax param names in the plain layer order so
:func:`plain_pc.weights_from_flax` can copy the weights across.
"""

from __future__ import annotations

import functools
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


class CNN(nn.Module):
    """``Conv 3x3 -> relu -> avg_pool 2x2 -> PCNode`` blocks, then Dense layers.

    The layout of the MNIST example's CNN (``examples/mnist/models.py``) with its
    head inlined, so that the param names are flat (``Conv_i``, ``Dense_i``).
    """

    channels: Sequence[int] = (16, 32)
    hidden: Sequence[int] = (128,)
    outputs: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, H, W, C] -> [B, outputs]``."""
        for c in self.channels:
            x = nn.relu(nn.Conv(c, (3, 3))(x))
            x = fpc.PCNode()(nn.avg_pool(x, (2, 2), strides=(2, 2)))
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = fpc.PCNode()(nn.relu(nn.Dense(width)(x)))
        return nn.Dense(self.outputs)(x)


class ResidualBlock(nn.Module):
    """``Conv -> BN -> relu -> Conv -> BN``, plus the skip, then relu.

    The skip is the identity, or a 1x1 conv and BatchNorm when the shape changes.
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """``[B, H, W, C] -> [B, H / strides, W / strides, features]``."""
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        strides = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), strides, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), strides, use_bias=False, name="projection")(x)
            x = norm(name="projection_norm")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """The MNIST example's small ResNet (``examples/mnist/models.py``, ``configs/resnet.py``).

    Stem: 3x3 conv with stride 2 (28x28 -> 14x14), BatchNorm, relu, PCNode; then
    stages of :class:`ResidualBlock` s (each stage after the first starts with a
    stride-2 block), a PCNode after every block; global average pooling, ``Dense``.
    ``train`` as in Flax's ImageNet ResNet: BatchNorm uses the batch's statistics.
    """

    stem: int = 16
    stages: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    outputs: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """``[B, H, W, C] -> [B, outputs]``."""
        x = nn.Conv(self.stem, (3, 3), (2, 2), use_bias=False, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_norm")(x)
        x = fpc.PCNode()(nn.relu(x))
        for stage, features in enumerate(self.stages):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = fpc.PCNode()(ResidualBlock(features, strides)(x, train))
        return nn.Dense(self.outputs)(x.mean(axis=(1, 2)))


def plain_names(model: nn.Module) -> list[str]:
    """The model's param names in layer order (what :mod:`plain_pc` expects)."""
    if isinstance(model, MLP):
        return [f"Dense_{i}" for i in range(len(model.hidden) + 1)]
    if isinstance(model, VGG5):
        return [f"Conv_{i}" for i in range(len(model.channels))] + ["Dense_0"]
    if isinstance(model, CNN):
        convs = [f"Conv_{i}" for i in range(len(model.channels))]
        return convs + [f"Dense_{i}" for i in range(len(model.hidden) + 1)]
    raise TypeError(f"no plain-JAX twin for {type(model).__name__}")
