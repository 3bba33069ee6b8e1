"""Predictive-coding networks for MNIST: a value node after every hidden layer.

Called with params only, each model is the plain feed-forward network (that is
how it is evaluated); :class:`flax_pc.PCTrainState` gives the nodes their
values and energies during training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

import flax_pc as fpc

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "leaky_relu": nn.leaky_relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "sigmoid": nn.sigmoid,
    "hard_tanh": nn.hard_tanh,
    "linear": lambda x: x,
}


class MLP(nn.Module):
    """``Dense -> activation -> PCNode`` per hidden layer, then a ``Dense`` output.

    Attributes:
      hidden_sizes: the width of each hidden layer.
      num_classes: the output width (the prediction for the clamped target).
      activation: a name in :data:`ACTIVATIONS`.
      node_init: how each node's value starts a batch (see :class:`fpc.PCNode`).
      node_init_stddev: its standard deviation for ``node_init='normal'``.
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)
    num_classes: int = 10
    activation: str = "tanh"
    node_init: str = "forward"
    node_init_stddev: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for size in self.hidden_sizes:
            x = act(nn.Dense(size)(x))
            x = fpc.PCNode(init=self.node_init, init_stddev=self.node_init_stddev)(x)
        return nn.Dense(self.num_classes)(x)


class Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution computed as one matmul over shifted copies of the input.

    The same function and the same ``kernel`` ``[3, 3, in, features]`` / ``bias``
    params as ``nn.Conv(features, (3, 3))``. Why not ``nn.Conv``: inside a
    ``lax.scan`` (``fpc.train_epoch`` runs the epoch as one), XLA:CPU computes a
    convolution's kernel gradient about 15x slower than outside it
    (jax-ml/jax#12868); this form's gradient is a plain matmul.

    Attributes:
      features: output channels.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, channels, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        height, width = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        # Channel order (row, column, channel) is the kernel's row-major order.
        patches = jnp.concatenate(
            [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)],
            axis=-1,
        )
        return patches @ kernel.reshape(9 * channels, self.features) + bias


class CNN(nn.Module):
    """Conv blocks (``Conv -> activation -> avg_pool -> PCNode``), then an :class:`MLP` head.

    The layout of Flax's MNIST CNN: 3x3 convolutions (:class:`Conv3x3`), each
    halving the image by 2x2 average pooling, then dense hidden layers.

    Attributes:
      conv_features: the channels of each conv block.
      hidden_sizes, num_classes, activation, node_init, node_init_stddev: as in
        :class:`MLP`, for the dense layers after the conv blocks.
    """

    conv_features: Sequence[int] = (32, 64)
    hidden_sizes: Sequence[int] = (256,)
    num_classes: int = 10
    activation: str = "relu"
    node_init: str = "forward"
    node_init_stddev: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for features in self.conv_features:
            x = act(Conv3x3(features)(x))
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = fpc.PCNode(init=self.node_init, init_stddev=self.node_init_stddev)(x)
        return MLP(
            hidden_sizes=self.hidden_sizes,
            num_classes=self.num_classes,
            activation=self.activation,
            node_init=self.node_init,
            node_init_stddev=self.node_init_stddev,
            name="head",
        )(x)
