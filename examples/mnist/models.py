"""Predictive-coding networks for MNIST: a value node after every hidden layer.

Written as Flax writes its models: ``act`` is a function, ``node`` a module
class or a ``functools.partial`` of one (``fpc.PCNode`` with its fields), and
``__call__(x, train)`` takes ``train`` like Flax's ResNet (dropout and
BatchNorm's batch statistics in training). Called with params only, a model is
the plain feed-forward network, which is how it is evaluated. :class:`FlaxCNN`
is Flax's own MNIST CNN, unchanged; :class:`WithNodes` adds nodes and modes.
The deep models are in ``models_deep.py``, bidirectional PC in ``models_bpc.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import linen as nn

import flax_pc as fpc

ModuleDef = Any

#: The hidden activations ``config.activation`` can name.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    **{name: getattr(nn, name) for name in ("tanh", "relu", "leaky_relu", "gelu", "silu")},
    **{name: getattr(nn, name) for name in ("elu", "sigmoid", "hard_tanh")},
    "linear": lambda x: x,
}


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
    """Conv blocks (3x3 ``Conv -> act -> 2x2 avg_pool -> node``), then an :class:`MLP` head.

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
    """``model`` as Flax writes it (no nodes, no ``train``), used as the models above are.

    In the training mode :func:`flax_pc.with_nodes` puts a ``node`` (``fpc.PCNode``
    or a ``functools.partial`` of it) where the data flows into its ``nn.Dense``
    and ``nn.Conv`` layers; ``init`` and the evaluation mode run it unchanged.
    """

    model: nn.Module
    node: ModuleDef = fpc.PCNode

    def init(self, rngs: Any, x: jax.Array, train: bool) -> Any:
        del train  # the params are the same in either mode
        return self.model.init(rngs, x)

    def apply(self, variables: Any, x: jax.Array, train: bool, **kwargs: Any) -> Any:
        fields = getattr(self.node, "keywords", {})  # with_nodes takes PCNode's fields
        with_nodes = fpc.with_nodes(self.model.apply, layers=(nn.Dense, nn.Conv), **fields)
        return (with_nodes if train else self.model.apply)(variables, x, **kwargs)
