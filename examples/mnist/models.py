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
from examples.common.activations import ACTIVATIONS

#: The fields of :class:`PCNetwork`, which every model has.
SHARED_FIELDS = (
    "num_classes",
    "activation",
    "node_init",
    "node_init_stddev",
    "node_latent",
    "dropout_rate",
)


class PCNetwork(nn.Module):
    """The fields every model here shares: its output, activation, nodes and dropout.

    Attributes:
      num_classes: the output width (the prediction for the clamped target).
      activation: a name in ``ACTIVATIONS`` (``examples.common.activations``).
      node_init: how each node's value starts a batch (``PCNode``'s ``value_init``).
      node_init_stddev: its standard deviation for ``node_init='normal'``.
      node_latent: what inference moves (``PCNode``'s ``latent``): ``'value'``
        (PC) or ``'error'`` (ePC).
      dropout_rate: dropout before the output layer in training (0: none).
    """

    num_classes: int = 10
    activation: str = "tanh"
    node_init: str = "forward"
    node_init_stddev: float = 1.0
    node_latent: str = "value"
    dropout_rate: float = 0.0

    def node(self) -> fpc.PCNode:
        """A new value node with this model's settings (call it where the node goes)."""
        return fpc.PCNode(
            value_init=self.node_init,
            value_init_stddev=self.node_init_stddev,
            latent=self.node_latent,
        )

    def shared_fields(self) -> dict[str, object]:
        """This model's :class:`PCNetwork` fields, to build a sub-network with."""
        return {name: getattr(self, name) for name in SHARED_FIELDS}

    def output_dropout(self, x: jax.Array, train: bool) -> jax.Array:
        """Dropout before the output layer, in training only."""
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class MLP(PCNetwork):
    """``Dense -> activation -> PCNode`` per hidden layer, then ``Dropout -> Dense`` output.

    Attributes:
      hidden_sizes: the width of each hidden layer.
      num_classes, activation, node_init, node_init_stddev, node_latent,
        dropout_rate: as in :class:`PCNetwork`.
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for size in self.hidden_sizes:
            x = self.node()(act(nn.Dense(size)(x)))
        return nn.Dense(self.num_classes)(self.output_dropout(x, train))


class CNN(PCNetwork):
    """Conv blocks (``Conv -> activation -> avg_pool -> PCNode``), then an :class:`MLP` head.

    The layout of Flax's MNIST CNN: 3x3 convolutions (``nn.Conv``), each
    halving the image by 2x2 average pooling, then dense hidden layers.

    Attributes:
      conv_features: the channels of each conv block.
      hidden_sizes: the dense layers after the conv blocks (:class:`MLP`'s).
      num_classes, activation, node_init, node_init_stddev, node_latent,
        dropout_rate: as in :class:`PCNetwork`.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = (256,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for features in self.conv_features:
            x = act(nn.Conv(features, (3, 3))(x))
            x = self.node()(nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)))
        return MLP(hidden_sizes=self.hidden_sizes, name="head", **self.shared_fields())(x, train)


class ResidualBlock(nn.Module):
    """``Conv -> BN -> act -> Conv -> BN``, plus the skip, then ``act``.

    The skip is the identity, or a 1x1 conv and BatchNorm (a projection) when
    the block changes the channels or the resolution.

    Attributes:
      features: output channels.
      strides: the first conv's stride (2 halves the resolution).
      activation: a name in ``ACTIVATIONS`` (``examples.common.activations``).
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


class ResNet(PCNetwork):
    """A small ResNet with a value node after the stem and after every residual block.

    Stem: 3x3 conv with stride 2 (28x28 -> 14x14), BatchNorm, activation,
    value node. Then stages of residual blocks (:class:`ResidualBlock`), each followed by
    a value node; every stage after the first starts with a stride-2 block.
    Then global average pooling, dropout (training only) and ``Dense(num_classes)``.

    Attributes:
      stem_features: the stem's channels.
      stage_features: the channels of each stage.
      blocks_per_stage: residual blocks in each stage.
      num_classes, activation, node_init, node_init_stddev, node_latent,
        dropout_rate: as in :class:`PCNetwork`.
    """

    stem_features: int = 16
    stage_features: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = nn.Conv(self.stem_features, (3, 3), (2, 2), use_bias=False, name="stem")(x)
        x = act(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="stem_norm")(x))
        x = self.node()(x)
        for stage, features in enumerate(self.stage_features):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(features, strides, self.activation)(x, train)
                x = self.node()(x)
        x = x.mean(axis=(1, 2))  # global average pooling
        return nn.Dense(self.num_classes)(self.output_dropout(x, train))


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


class ResidualMLP(PCNetwork):
    """A deep residual MLP: ``depth`` weight layers, a value node after all but the last.

    Input layer ``x -> h`` (a node), then ``depth - 2`` residual blocks
    ``h -> h + Dense(activation(h))`` (a node after each), then the output
    layer ``Dense(activation(h))``. No biases. ``parameterization='mupc'``
    is μPC (Innocenti et al., 2025): kernels from ``N(0, 1)`` and each layer's
    output scaled by :func:`flax_pc.mupc_scalings`; ``'standard'`` is the same
    network with LeCun-normal kernels and no scaling.

    Attributes:
      depth: weight layers (input, residual blocks, output), >= 2.
      width: the width of every hidden layer.
      parameterization: ``'standard'`` or ``'mupc'``.
      num_classes, activation, node_init, node_init_stddev, node_latent,
        dropout_rate: as in :class:`PCNetwork`.
    """

    depth: int = 8
    width: int = 128
    parameterization: str = "standard"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        if self.parameterization == "mupc":
            input_scale, hidden_scale, output_scale = fpc.mupc_scalings(
                x.shape[-1], self.width, self.depth
            )
            kernel_init = nn.initializers.normal(stddev=1.0)
        else:
            input_scale = hidden_scale = output_scale = 1.0
            kernel_init = nn.initializers.lecun_normal()
        dense = functools.partial(fpc.ScaledDense, kernel_init=kernel_init)
        x = self.node()(dense(self.width, input_scale)(x))
        for _ in range(self.depth - 2):
            x = self.node()(x + dense(self.width, hidden_scale)(act(x)))
        x = self.output_dropout(act(x), train)
        return dense(self.num_classes, output_scale)(x)
