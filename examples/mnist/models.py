"""Predictive-coding networks for MNIST: a value node after every hidden layer.

Written as Flax writes its models (``examples/imagenet/models.py``): the
activation is a function (``act``), the value node a module class or a
``functools.partial`` of one (``node``: ``fpc.PCNode`` with its
``value_init``, ``latent``, ...), and ``__call__(x, train)`` takes ``train``
like Flax's ResNet: ``train=True`` is the training mode (dropout on,
BatchNorm normalises with the batch's statistics and updates its running
averages in ``'batch_stats'``), ``train=False`` the evaluation mode. Called
with params (and ``batch_stats``) only, each model is the plain feed-forward
network, which is how it is evaluated; :class:`flax_pc.PCTrainState` gives the
nodes their values and energies during training.

:class:`FlaxCNN` is the exception on purpose: Flax's own MNIST CNN, unchanged,
without nodes or modes; :class:`WithNodes` gives it both.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import linen as nn

import flax_pc as fpc

ModuleDef = Any


class MLP(nn.Module):
    """``Dense -> act -> node`` per hidden layer, then ``Dropout -> Dense`` output.

    Attributes:
      hidden_sizes: the width of each hidden layer.
      num_classes: the output width (the prediction for the clamped target).
      act: the hidden activation.
      node: the value node after each hidden layer.
      dropout_rate: dropout before the output layer in training (0: none).
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)
    num_classes: int = 10
    act: Callable[[jax.Array], jax.Array] = nn.tanh
    node: ModuleDef = fpc.PCNode
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for size in self.hidden_sizes:
            x = self.node()(self.act(nn.Dense(size)(x)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Conv blocks (``Conv -> act -> avg_pool -> node``), then an :class:`MLP` head.

    The layout of Flax's MNIST CNN: 3x3 convolutions (``nn.Conv``), each
    halving the image by 2x2 average pooling, then dense hidden layers.

    Attributes:
      conv_features: the channels of each conv block.
      hidden_sizes: the dense layers after the conv blocks (:class:`MLP`'s).
      num_classes, act, node, dropout_rate: as in :class:`MLP`.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = (256,)
    num_classes: int = 10
    act: Callable[[jax.Array], jax.Array] = nn.relu
    node: ModuleDef = fpc.PCNode
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for features in self.conv_features:
            x = self.act(nn.Conv(features, (3, 3))(x))
            x = self.node()(nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)))
        head = MLP(
            self.hidden_sizes, self.num_classes, self.act, self.node, self.dropout_rate, name="head"
        )
        return head(x, train)


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
      num_classes, act, node, dropout_rate: as in :class:`MLP`.
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
      num_classes, act, node, dropout_rate: as in :class:`MLP`.
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


class FlaxCNN(nn.Module):
    """The CNN of Flax's own MNIST example, as Flax writes it: no ``PCNode``, no ``train``.

    ``model='flax_cnn'`` trains it by predictive coding unchanged, through
    :func:`flax_pc.with_nodes` (a value node on the input of ``Conv_1``,
    ``Dense_0`` and ``Dense_1``: after each hidden activation).
    """

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # flatten
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        x = nn.Dense(features=10)(x)
        return x


@dataclasses.dataclass(frozen=True)
class WithNodes:
    """A model as Flax writes it (no nodes, no ``train``), used as the models above are.

    ``init`` and ``apply`` take ``train`` like theirs. In the training mode
    :func:`flax_pc.with_nodes` puts nodes (``node``) where the data flows into its
    ``nn.Dense`` and ``nn.Conv`` layers (after every hidden activation); ``init``
    and the evaluation mode run the model unchanged. The params tree is the
    model's own.

    Attributes:
      model: the linen model.
      node: the value node (``fpc.PCNode`` or a ``functools.partial`` of it).
    """

    model: nn.Module
    node: ModuleDef = fpc.PCNode

    def _with_nodes(self, method: Callable[..., Any]) -> Callable[..., Any]:
        fields = getattr(self.node, "keywords", {})  # with_nodes takes PCNode's fields
        return fpc.with_nodes(method, layers=(nn.Dense, nn.Conv), **fields)

    def init(self, rngs: Any, x: jax.Array, train: bool) -> Any:
        del train  # the params are the same in either mode
        return self.model.init(rngs, x)

    def apply(self, variables: Any, x: jax.Array, train: bool, **kwargs: Any) -> Any:
        apply = self._with_nodes(self.model.apply) if train else self.model.apply
        return apply(variables, x, **kwargs)
