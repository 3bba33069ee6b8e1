"""Predictive-coding networks for MNIST: a value node after every hidden layer.

Every model's ``__call__(x, train)`` takes ``train`` like Flax's ImageNet
ResNet: ``train=True`` is the training mode (dropout on, BatchNorm normalises
with the batch's statistics and updates its running averages in the
``'batch_stats'`` collection), ``train=False`` the evaluation mode. Called with
params (and ``batch_stats``) only, each model is the plain feed-forward network
(that is how it is evaluated); :class:`flax_pc.PCTrainState` gives the nodes
their values and energies during training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
from flax import linen as nn

import flax_pc as fpc
from flax_pc_examples.common.activations import ACTIVATIONS


class MLP(nn.Module):
    """``Dense -> activation -> PCNode`` per hidden layer, then ``Dropout -> Dense`` output.

    Attributes:
      hidden_sizes: the width of each hidden layer.
      num_classes: the output width (the prediction for the clamped target).
      activation: a name in ``ACTIVATIONS`` (``flax_pc_examples.common.activations``).
      node_init: how each node's value starts a batch (``PCNode``'s ``value_init``).
      node_init_stddev: its standard deviation for ``node_init='normal'``.
      dropout_rate: dropout before the output layer in training (0: none).
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)
    num_classes: int = 10
    activation: str = "tanh"
    node_init: str = "forward"
    node_init_stddev: float = 1.0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for size in self.hidden_sizes:
            x = act(nn.Dense(size)(x))
            x = fpc.PCNode(value_init=self.node_init, value_init_stddev=self.node_init_stddev)(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
    """Conv blocks (``Conv -> activation -> avg_pool -> PCNode``), then an :class:`MLP` head.

    The layout of Flax's MNIST CNN: 3x3 convolutions (``nn.Conv``), each
    halving the image by 2x2 average pooling, then dense hidden layers.

    Attributes:
      conv_features: the channels of each conv block.
      hidden_sizes, num_classes, activation, node_init, node_init_stddev,
        dropout_rate: as in :class:`MLP`, for the dense layers after the conv blocks.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = (256,)
    num_classes: int = 10
    activation: str = "relu"
    node_init: str = "forward"
    node_init_stddev: float = 1.0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for features in self.conv_features:
            x = act(nn.Conv(features, (3, 3))(x))
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = fpc.PCNode(value_init=self.node_init, value_init_stddev=self.node_init_stddev)(x)
        return MLP(
            hidden_sizes=self.hidden_sizes,
            num_classes=self.num_classes,
            activation=self.activation,
            node_init=self.node_init,
            node_init_stddev=self.node_init_stddev,
            dropout_rate=self.dropout_rate,
            name="head",
        )(x, train)


class ResidualBlock(nn.Module):
    """``Conv -> BN -> act -> Conv -> BN``, plus the skip, then ``act``.

    The skip is the identity, or a 1x1 conv and BatchNorm (a projection) when
    the block changes the channels or the resolution.

    Attributes:
      features: output channels.
      strides: the first conv's stride (2 halves the resolution).
      activation: a name in ``ACTIVATIONS`` (``flax_pc_examples.common.activations``).
    """

    features: int
    strides: int = 1
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        strides = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), strides, use_bias=False)(x)
        y = act(norm()(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = norm()(y)
        if x.shape != y.shape:
            x = nn.Conv(self.features, (1, 1), strides, use_bias=False, name="projection")(x)
            x = norm(name="projection_norm")(x)
        return act(x + y)


class ResNet(nn.Module):
    """A small ResNet with a value node after the stem and after every residual block.

    Stem: 3x3 conv with stride 2 (28x28 -> 14x14), BatchNorm, activation,
    value node. Then stages of residual blocks (:class:`ResidualBlock`), each followed by
    a value node; every stage after the first starts with a stride-2 block.
    Then global average pooling, dropout (training only) and ``Dense(num_classes)``.

    Attributes:
      stem_features: the stem's channels.
      stage_features: the channels of each stage.
      blocks_per_stage: residual blocks in each stage.
      num_classes: the output width.
      activation: a name in ``ACTIVATIONS`` (``flax_pc_examples.common.activations``).
      node_init, node_init_stddev: as in :class:`MLP`.
      dropout_rate: dropout before the output layer in training (0: none).
    """

    stem_features: int = 16
    stage_features: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    num_classes: int = 10
    activation: str = "relu"
    node_init: str = "forward"
    node_init_stddev: float = 1.0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        node = functools.partial(
            fpc.PCNode, value_init=self.node_init, value_init_stddev=self.node_init_stddev
        )
        x = nn.Conv(self.stem_features, (3, 3), (2, 2), use_bias=False, name="stem")(x)
        x = act(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_norm")(x))
        x = node()(x)
        for stage, features in enumerate(self.stage_features):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(features, strides, self.activation)(x, train)
                x = node()(x)
        x = x.mean(axis=(1, 2))  # global average pooling
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


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
