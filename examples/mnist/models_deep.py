"""Deep predictive-coding networks for MNIST: a ResNet with BatchNorm, a residual MLP (μPC).

Written as ``models.py``'s: ``act``, ``node`` and ``dropout_rate`` as there,
``__call__(x, train)`` with Flax's training and evaluation modes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import linen as nn

import flax_pc as fpc

ModuleDef = Any


class ResidualBlock(nn.Module):
    """``Conv -> BN -> act -> Conv -> BN``, plus the skip, then ``act``.

    The skip is the identity, or a 1x1 conv and BatchNorm (a projection) when
    the block changes the channels or the resolution.

    Attributes:
      features: output channels.
      strides: the first conv's stride (2 halves the resolution).
      act: the activation.
    """

    features: int
    strides: int = 1
    act: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        strides = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), strides, use_bias=False)(x)
        y = self.act(norm()(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = norm()(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), strides, use_bias=False, name="projection")(x)
            x = norm(name="projection_norm")(x)
        return self.act(x + y)


class ResNet(nn.Module):
    """A small ResNet with a value node after the stem and after every residual block.

    Stem: 3x3 conv with stride 2 (28x28 -> 14x14), BatchNorm, activation,
    value node. Then stages of residual blocks (:class:`ResidualBlock`), each
    followed by a value node; every stage after the first starts with a
    stride-2 block. Then global average pooling, dropout (training only) and
    ``Dense(num_classes)``.

    Attributes:
      stem_features: the stem's channels.
      stage_features: the channels of each stage.
      blocks_per_stage: residual blocks in each stage.
      num_classes, act, node, dropout_rate: as in ``models.MLP``.
    """

    stem_features: int = 16
    stage_features: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    num_classes: int = 10
    act: Callable[[jax.Array], jax.Array] = nn.relu
    node: ModuleDef = fpc.PCNode
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(self.stem_features, (3, 3), (2, 2), use_bias=False, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_norm")(x)
        x = self.node()(self.act(x))
        for stage, features in enumerate(self.stage_features):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = self.node()(ResidualBlock(features, strides, self.act)(x, train))
        x = x.mean(axis=(1, 2))  # global average pooling
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class ResidualMLP(nn.Module):
    """A deep residual MLP: ``depth`` weight layers, a value node after all but the last.

    Input layer ``x -> h`` (a node), then ``depth - 2`` residual blocks
    ``h -> h + Dense(act(h))`` (a node after each), then the output layer
    ``Dense(act(h))``. No biases. ``mupc=True`` is μPC (Innocenti et al.,
    2025): kernels from ``N(0, 1)`` and each layer's output scaled by
    :func:`flax_pc.mupc_scalings`; ``False`` is the same network with
    LeCun-normal kernels and no scaling.

    Attributes:
      depth: weight layers (input, residual blocks, output), >= 2.
      width: the width of every hidden layer.
      mupc: the μPC parameterization.
      num_classes, act, node, dropout_rate: as in ``models.MLP``.
    """

    depth: int = 8
    width: int = 128
    mupc: bool = False
    num_classes: int = 10
    act: Callable[[jax.Array], jax.Array] = nn.relu
    node: ModuleDef = fpc.PCNode
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        if self.mupc:
            scales = fpc.mupc_scalings(x.shape[-1], self.width, self.depth)
            kernel_init = nn.initializers.normal(stddev=1.0)
        else:
            scales = (1.0, 1.0, 1.0)
            kernel_init = nn.initializers.lecun_normal()
        input_scale, hidden_scale, output_scale = scales
        dense = functools.partial(fpc.ScaledDense, kernel_init=kernel_init)
        x = self.node()(dense(self.width, input_scale)(x))
        for _ in range(self.depth - 2):
            x = self.node()(x + dense(self.width, hidden_scale)(self.act(x)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(self.act(x))
        return dense(self.num_classes, output_scale)(x)
