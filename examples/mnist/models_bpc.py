"""Bidirectional predictive coding (``model='bpc'``): an MLP with backward weights too.

Its feed-forward pass classifies, as :mod:`examples.mnist.models`' MLP does; with
``generate=True`` it infers an image for a clamped label (``generate.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import flax_pc as fpc

ModuleDef = Any


class BPC(nn.Module):
    """Bidirectional PC: an MLP that classifies by a feed-forward pass and generates by inference.

    Bidirectional predictive coding (bPC; Oliviers, Tang & Bogacz, ICLR 2026). Layers
    ``z_0 = x`` (the image, flattened), ``z_1 .. z_{L-1}`` (value nodes, one per hidden
    layer) and ``z_L = y`` (the one-hot label). Forward weights predict each layer from
    the one below, ``f_l(z_{l-1})`` (the classifier), backward weights each layer from
    the one above, ``g_l(z_l)`` (the generator); every prediction is ``Dense(act(z))``,
    with ``act`` the identity on the image and on the label, so the nodes hold
    pre-activations. The energy is::

        F = sum_{l=1..L} ½‖z_l − f_l(z_{l−1})‖²
            + backward_precision · sum_{l=1..L} ½‖z_{l−1} − g_l(z_l)‖²

    The forward errors have unit precision (the paper's ``alpha_f = 1``; the label's
    forward term is the train state's output energy); ``backward_precision`` is
    ``alpha_b / alpha_f``: scaling both changes neither Adam's weight steps nor
    inference beyond its step size. The backward terms are :class:`flax_pc.EnergyTerm`.

    Three ways to call it (``x`` and what the model does):

    - **training**: ``[B, image_size + num_classes]``, the image with its one-hot label
      appended (:func:`with_labels`), since the backward weights predict down from the
      label; the nodes start at their forward predictions, the output (``f_L``) is
      clamped to the label by the output energy.
    - **classifying**: the images alone, ``[B, 28, 28, 1]``, params only: the
      feed-forward network, whose output never depends on the label.
    - **generating** (``generate=True``): the one-hot labels ``[B, num_classes]``. The
      image is a node too, and every node starts at its *backward* prediction (a
      top-down pass from the label: the nodes own the backward terms, the forward ones
      are the :class:`flax_pc.EnergyTerm`, the same ``F``); the output is clamped to the
      label, and inference finds the image (:mod:`examples.mnist.generate`).

    Attributes:
      hidden_sizes: the width of each hidden layer.
      backward_precision: ``alpha_b``, the weight of the backward errors, >= 0 (0: PC
        with unused backward weights).
      num_classes: the label's width.
      image_size: the image's pixels.
      act: the hidden activation.
      node: the value node of each hidden layer (and of the image, generating).
      dropout_rate: dropout before the output layer in training (0: none).
      generate: the generating mode (above).
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)
    backward_precision: float = 0.001
    num_classes: int = 10
    image_size: int = 784
    act: Callable[[jax.Array], jax.Array] = nn.tanh
    node: ModuleDef = fpc.PCNode
    dropout_rate: float = 0.0
    generate: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        sizes = (self.image_size, *self.hidden_sizes, self.num_classes)
        top = len(sizes) - 1  # L: z_0 is the image, z_L the label
        forward = [nn.Dense(sizes[l], name=f"forward_{l}") for l in range(1, top + 1)]
        backward = [nn.Dense(sizes[l - 1], name=f"backward_{l}") for l in range(1, top + 1)]

        def activation(z: jax.Array, l: int) -> jax.Array:  # z_l as a layer's input
            return z if l in (0, top) else self.act(z)

        def f(l: int, below: jax.Array) -> jax.Array:  # z_l's forward prediction
            return forward[l - 1](activation(below, l - 1))

        def g(l: int, above: jax.Array) -> jax.Array:  # z_{l-1}'s backward prediction
            return backward[l - 1](activation(above, l))

        names = ["image", *(f"hidden_{l}" for l in range(1, top))]
        if self.generate:
            z = [x] * (top + 1)  # z[top] is the label; the others are nodes, made top-down
            for l in range(top, 0, -1):
                node = self.node(precision=self.backward_precision, name=names[l - 1])
                z[l - 1] = node(g(l, z[l]))
            for l in range(1, top):
                fpc.EnergyTerm(name=f"forward_term_{l}")(z[l], f(l, z[l - 1]))
        else:
            image, label = self._image_and_label(x)
            z = [image]
            for l in range(1, top):  # the nodes start at their forward predictions
                z.append(self.node(name=names[l])(f(l, z[l - 1])))
            z.append(label)
            for l in range(1, top + 1):
                term = fpc.EnergyTerm(precision=self.backward_precision, name=f"backward_term_{l}")
                term(z[l - 1], g(l, z[l]))
        below = nn.Dropout(self.dropout_rate, deterministic=not train)(
            activation(z[top - 1], top - 1)
        )
        return forward[top - 1](below)

    def _image_and_label(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(image [B, image_size], label [B, num_classes])`` of a classifying/training input."""
        x = x.reshape((x.shape[0], -1))
        image, label = x[:, : self.image_size], x[:, self.image_size :]
        if label.shape[-1] == 0:  # the images alone: the label takes no part in the output
            if self.is_mutable_collection(fpc.ENERGIES) and not self.is_initializing():
                raise ValueError(
                    "BPC: its energy needs the label (the backward weights predict down from "
                    "it): give the images with their one-hot labels, models.with_labels(images, "
                    "one_hot), [B, image_size + num_classes]."
                )
            label = jnp.zeros((x.shape[0], self.num_classes), x.dtype)
        if label.shape[-1] != self.num_classes or image.shape[-1] != self.image_size:
            raise ValueError(
                f"BPC: the input has {x.shape[-1]} features per example; expected the image's "
                f"{self.image_size} (classifying) or those and the label's {self.num_classes} "
                f"(training)."
            )
        return image, label


def with_labels(images: np.ndarray, one_hot: np.ndarray) -> np.ndarray:
    """The training input of :class:`BPC`: each image flattened, its one-hot label appended.

    Args:
      images: ``[N, 28, 28, 1]``.
      one_hot: ``[N, num_classes]``.

    Returns:
      ``[N, 784 + num_classes]``.
    """
    return np.concatenate([images.reshape(len(images), -1), one_hot], axis=-1)
