"""A predictive-coding decoder: an inferred latent node at the top, the image at the bottom.

The input of the model is the prior mean of the latent (zeros, ``[B, latent]``):
the latent node ``z`` is a :class:`flax_pc.PCNode` whose prediction is that
mean, so its energy ``½‖z‖²`` is the negative log-density of a N(0, I) prior.
Below it, every hidden layer has a value node (or none: ``hidden_nodes=False``),
and the output layer predicts the image, which training clamps through the
output energy. :func:`sample` draws images from the model, ancestrally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import linen as nn

import flax_pc as fpc

#: Name of the latent node in the :data:`flax_pc.NODES` collection.
LATENT = "latent"
ModuleDef = Any


class Decoder(nn.Module):
    """``z -> Dense -> PCNode -> activation -> ... -> Dense`` to the image.

    Each hidden node holds a pre-activation, which the layer above predicts
    linearly: ``mu_l = W_l f(v_{l-1}) + b_l`` (``f`` is the identity on ``z``);
    the README says why, not after the activation as in the MNIST example.
    Its input is :func:`prior_mean`.

    Attributes:
      latent_size: the width of the latent ``z`` (the input's).
      hidden_sizes: the width of each hidden layer, from the latent down.
      image_size: the output width (flattened pixels).
      act: the hidden activation.
      to_image: the image from the output: the mean of the output energy's
        distribution (``nn.sigmoid`` of Bernoulli logits; the identity for a
        Gaussian's mean).
      latent_node: the latent node: its ``value_init`` ``'zeros'`` starts it
        at the prior mean (for inference), ``'normal'`` draws it from the
        N(0, I) prior (for sampling; needs ``rng`` in :func:`flax_pc.init_nodes`).
      node: the value node of each hidden layer.
      hidden_nodes: a ``node`` on each hidden layer (``True``), or none: the
        hidden layers are then a deterministic function of the latent, the
        only node.
    """

    latent_size: int = 32
    hidden_sizes: Sequence[int] = (256,)
    image_size: int = 784
    act: Callable[[jax.Array], jax.Array] = nn.tanh
    to_image: Callable[[jax.Array], jax.Array] = nn.sigmoid
    latent_node: ModuleDef = functools.partial(fpc.PCNode, value_init="zeros")
    node: ModuleDef = fpc.PCNode
    hidden_nodes: bool = True

    @nn.compact
    def __call__(self, prior_mean: jax.Array) -> jax.Array:
        """Returns the output layer's prediction (logits or pixels), ``[B, image_size]``.

        Args:
          prior_mean: the mean of the latent's prior, zeros ``[B, latent_size]``.
        """
        x = self.latent_node(name=LATENT)(prior_mean)
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dense(size)(x if i == 0 else self.act(x))
            if self.hidden_nodes:
                x = self.node(name=f"hidden_{i}")(x)
        if self.hidden_sizes:
            x = self.act(x)
        return nn.Dense(self.image_size)(x)


def prior_mean(model: Decoder, batch_size: int) -> jax.Array:
    """The model's input: the N(0, I) prior's mean, ``zeros [batch_size, latent_size]``."""
    return jnp.zeros((batch_size, model.latent_size), jnp.float32)


def decode(model: Decoder, params: Any, latent: jax.Array) -> jax.Array:
    """The image the model decodes from the latent values ``latent`` ``[B, latent_size]`` alone.

    Only the latent node is given: every hidden node then passes its
    prediction on (a plain feed-forward pass from ``z``), so the image depends
    on nothing but the latent.
    """
    nodes = {LATENT: {"value": latent}}
    output = model.apply({"params": params, fpc.NODES: nodes}, jnp.zeros_like(latent))
    return model.to_image(cast(jax.Array, output))


class AncestralNode(nn.Module):
    """Stands in for a :class:`flax_pc.PCNode` to sample: its prediction plus Gaussian noise.

    A node of unit precision (``squared_error``, ``precision=1``) is the
    Gaussian ``v ~ N(mu, I)``; its noise comes from the :data:`flax_pc.NOISE`
    stream. On the latent, whose prediction is the prior mean, it draws from
    the prior.
    """

    @nn.compact
    def __call__(self, prediction: jax.Array) -> jax.Array:
        noise = jax.random.normal(self.make_rng(fpc.NOISE), prediction.shape, prediction.dtype)
        return prediction + noise


def sample(model: Decoder, params: Any, rng: jax.Array, n: int) -> jax.Array:
    """``n`` images drawn from the model ancestrally, ``[n, image_size]`` in ``[0, 1]``.

    From the top down, every node's value is drawn from its Gaussian around its
    prediction (the latent from the N(0, I) prior, each hidden node with unit
    variance), as the MCPC paper samples its models (``sample_pc`` in its
    code); the image is the mean of the output's distribution
    (``model.to_image``), not a draw of binary pixels. This is the
    distribution that Langevin dynamics on every node with the image left
    free (the paper's pictures) samples at equilibrium, without its burn-in.
    """
    sampler = model.clone(latent_node=AncestralNode, node=AncestralNode)
    output = sampler.apply({"params": params}, prior_mean(model, n), rngs={fpc.NOISE: rng})
    return model.to_image(cast(jax.Array, output))
