"""The MLP of ``models.py`` written in Flax NNX: the model of ``configs/nnx.py``.

Written as NNX writes its models: the layers are created in ``__init__``
(with the input width given, and ``rngs`` that draw the weights and feed
dropout), and the mode is the model's own (``model.train()``,
``model.eval()``), not an argument. Called as ``model(x)`` it is the plain
feed-forward network, in either mode; :func:`flax_pc.nnx.train_step` gives
the nodes (:class:`flax_pc.nnx.PCNode`) their values and energies during
training.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

import flax_pc as fpc


class MLP(nnx.Module):
    """``Linear -> act -> node`` per hidden layer, then ``Dropout -> Linear`` output.

    :class:`models.MLP <examples.mnist.models.MLP>` in NNX: the same layers,
    and ``nnx.Linear``'s default initialisers are ``nn.Dense``'s.

    Args:
      in_features: the width of a flattened input (784 for a 28x28 image).
      hidden_sizes: the width of each hidden layer.
      num_classes: the output width (the prediction for the clamped target).
      act: the hidden activation.
      node: makes the value node after each hidden layer: ``fpc.nnx.PCNode``
        or a ``functools.partial`` of it (``value_init``, ``latent``, ...).
      dropout_rate: dropout before the output layer in training (0: none).
      rngs: ``params`` draws the weights, ``dropout`` the dropout masks.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int] = (128, 128, 128),
        num_classes: int = 10,
        *,
        act: Callable[[jax.Array], jax.Array] = nnx.tanh,
        node: Callable[[], fpc.nnx.PCNode] = fpc.nnx.PCNode,
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        sizes = (in_features, *hidden_sizes)
        linear = functools.partial(nnx.Linear, rngs=rngs)
        self.hidden = nnx.List([linear(a, b) for a, b in zip(sizes, sizes[1:])])
        self.nodes = nnx.List([node() for _ in hidden_sizes])
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.out = linear(sizes[-1], num_classes)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for layer, node in zip(self.hidden, self.nodes):
            x = node(self.act(layer(x)))
        return self.out(self.dropout(x))
