"""The associative memories of the example: a generative PC network, and two Hopfield networks.

- :class:`Memory`: a generative PC network (Salvatori et al., 2021): a latent
  node at the top, a decoder to the image. It stores images by learning to
  generate each from a latent of its own; it retrieves one by inference, the
  cue's known pixels clamped.
- :func:`storkey_weights`, :func:`hopfield_retrieve`: a classical Hopfield
  network of binary (+1/-1) units, its weights by the Storkey rule (Storkey,
  1997), its states updated one unit at a time.
- :func:`modern_hopfield_retrieve`: a modern (continuous) Hopfield network
  (Ramsauer et al., 2021): a softmax over the stored images' similarities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

import flax_pc as fpc


class Memory(nn.Module):
    """A generative PC network: ``z`` (the latent node) -> Dense -> tanh -> Dense -> the image.

    The input is the latent's prior mean, zeros ``[B, latent_size]``: the
    latent node predicted by it has the energy ``precision/2 |z|^2``, a
    Gaussian prior of variance ``1/prior_precision``. The output is the
    prediction of the image's pixels, clamped to the image (squared error).

    Attributes:
      latent_size: the dimension of ``z``.
      hidden_size: the width of the decoder's hidden layer.
      image_size: the number of pixels.
      prior_precision: the latent node's precision.
    """

    latent_size: int = 64
    hidden_size: int = 512
    image_size: int = 784
    prior_precision: float = 0.01

    @nn.compact
    def __call__(self, prior_mean: jax.Array) -> jax.Array:
        """The predicted pixels ``[B, image_size]``; ``prior_mean``: zeros ``[B, latent_size]``."""
        z = fpc.PCNode(value_init="zeros", precision=self.prior_precision, name="latent")(
            prior_mean
        )
        return nn.Dense(self.image_size)(nn.tanh(nn.Dense(self.hidden_size)(z)))


def storkey_weights(patterns: jax.Array) -> jax.Array:
    """The Storkey rule's weights ``[n, n]`` for ``patterns`` ``[N, n]`` of +1/-1, learnt in order.

    For each pattern ``xi``, with the local fields ``h_ij = sum_{k != i, j} w_ik xi_k``:
    ``w_ij += (xi_i xi_j - xi_i h_ji - h_ij xi_j) / n`` (``i != j``); the
    diagonal stays 0.
    """
    n = patterns.shape[-1]

    def learn(weights, xi):
        field = weights @ xi  # h_i = sum_{k != i} w_ik xi_k: the diagonal is 0
        h = field[:, None] - weights * xi[None, :]  # h_ij = h_i - w_ij xi_j
        update = (jnp.outer(xi, xi) - xi[:, None] * h.T - h * xi[None, :]) / n
        return (weights + update) * (1.0 - jnp.eye(n)), None

    weights, _ = jax.lax.scan(learn, jnp.zeros((n, n), patterns.dtype), patterns)
    return weights


def hopfield_retrieve(weights: jax.Array, states: jax.Array, sweeps: int) -> jax.Array:
    """A classical Hopfield network's states after ``sweeps`` asynchronous sweeps, ``[B, n]``.

    In each sweep the units ``i = 0 .. n-1`` in turn take the sign of their
    field ``sum_j w_ij s_j`` (+1 at 0), from ``states`` ``[B, n]`` of +1/-1.
    """
    n = weights.shape[0]

    def update(index, states):
        i = index % n
        field = states @ weights[:, i]
        return states.at[:, i].set(jnp.where(field >= 0, 1.0, -1.0))

    return jax.lax.fori_loop(0, sweeps * n, update, states)


def modern_hopfield_retrieve(memories: jax.Array, cues: jax.Array, beta: float) -> jax.Array:
    """One update of a modern Hopfield network: ``softmax(beta cues memories^T) memories``.

    Args:
      memories: the stored images ``[N, n]``.
      cues: ``[B, n]``; unknown pixels 0, so that they add nothing to the similarities.
      beta: the inverse temperature (large: the most similar memory alone).
    """
    return jax.nn.softmax(beta * cues @ memories.T, axis=-1) @ memories
