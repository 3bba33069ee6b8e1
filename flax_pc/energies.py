"""Energy functions: the per-example cost of a value node given its prediction.

An energy is any callable ``energy(value, prediction) -> [B]`` that takes the
value ``v`` held by a node (or the target, for the output layer) and the
prediction ``mu`` made for it by the layer below, both of shape
``[B, *features]``, and returns one non-negative number per example (the
leading axis is the batch). Everything in flax_pc sums these energies; the
gradients of that sum drive both the node updates and the weight updates.

The three standard energies correspond to the negative log-likelihood of a
Gaussian with unit variance, a categorical and a Bernoulli distribution.
To weight an energy (a precision, or a weak output as in Whittington & Bogacz),
multiply it: ``lambda v, mu: 0.1 * squared_error(v, mu)``.

The three never broadcast: ``value`` and ``prediction`` must have one shape
(else a ``ValueError`` names both, at trace time), so an output picked wrongly
(``out[0]`` of a model that returns one array is the first example's) or
integer labels given where one-hot targets belong are an error, not a silent
comparison with the wrong thing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

__all__ = ["squared_error", "cross_entropy", "bernoulli", "masked"]


def _same_shape(name: str, value: ArrayLike, prediction: ArrayLike) -> tuple[Array, Array]:
    """``value`` and ``prediction`` as arrays; raises unless they have one shape."""
    value, prediction = jnp.asarray(value), jnp.asarray(prediction)
    if value.shape == prediction.shape:
        return value, prediction
    hint = ""
    if value.ndim == prediction.ndim - 1 and jnp.issubdtype(value.dtype, jnp.integer):
        hint = (
            " Integer labels must be one-hot encoded first: "
            f"jax.nn.one_hot(labels, {prediction.shape[-1]})."
        )
    elif prediction.ndim >= 1 and value.shape[1:] == prediction.shape:
        hint = (
            " The prediction has the shape of one example: is it output[0] of a model that "
            "returns one array (the first example's), where a model returning several "
            "outputs was meant? Pick the output by structure (logits, extras = output)."
        )
    raise ValueError(
        f"{name}: the value (targets) has shape {tuple(value.shape)} but the prediction has "
        f"shape {tuple(prediction.shape)}; they must have one shape (an energy does not "
        f"broadcast).{hint}"
    )


def _sum_features(x: Array) -> Array:
    """Sums every axis but the leading (batch) one: ``[B, ...] -> [B]``."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def squared_error(value: ArrayLike, prediction: ArrayLike) -> Array:
    """Gaussian energy ``0.5 * sum_i (v_i - mu_i)^2`` per example.

    Args:
      value: node values (or targets), ``[B, *features]``.
      prediction: predictions ``mu`` of the same shape.

    Returns:
      ``[B]`` energies.

    Raises:
      ValueError: if ``value`` and ``prediction`` differ in shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax_pc import energies
      >>> value = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> prediction = jnp.array([[1.0, 0.0], [1.0, 1.0]])
      >>> energies.squared_error(value, prediction).tolist()
      [2.0, 1.0]
    """
    value, prediction = _same_shape("squared_error", value, prediction)
    return 0.5 * _sum_features(jnp.square(value - prediction))


def cross_entropy(value: ArrayLike, prediction: ArrayLike) -> Array:
    """Categorical energy ``-sum_i t_i * log softmax(mu)_i`` per example.

    Args:
      value: target probabilities (e.g. one-hot labels), ``[B, K]`` (or
        ``[B, ..., K]``; the softmax runs over the last axis).
      prediction: logits ``mu`` of the same shape.

    Returns:
      ``[B]`` energies (nats).

    Raises:
      ValueError: if ``value`` and ``prediction`` differ in shape (integer
        labels: one-hot encode them, ``jax.nn.one_hot(labels, K)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax_pc import energies
      >>> targets = jax.nn.one_hot(jnp.array([0, 3]), 4)
      >>> logits = jnp.zeros((2, 4))  # uniform: log(4) nats each
      >>> [round(e, 4) for e in energies.cross_entropy(targets, logits).tolist()]
      [1.3863, 1.3863]
    """
    value, prediction = _same_shape("cross_entropy", value, prediction)
    return -_sum_features(value * jax.nn.log_softmax(prediction, axis=-1))


def bernoulli(value: ArrayLike, prediction: ArrayLike) -> Array:
    """Binary cross-entropy with logits, summed over features, per example.

    ``-sum_i [t_i * log sigmoid(mu_i) + (1 - t_i) * log(1 - sigmoid(mu_i))]``

    Args:
      value: targets in ``[0, 1]``, ``[B, *features]``.
      prediction: logits ``mu`` of the same shape.

    Returns:
      ``[B]`` energies in nats, summed over the features.

    Raises:
      ValueError: if the two shapes differ (the energy does not broadcast).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax_pc import energies
      >>> targets = jnp.array([[1.0, 0.0], [1.0, 1.0]])
      >>> logits = jnp.zeros((2, 2))  # p = 0.5: log(2) nats per feature
      >>> [round(e, 4) for e in energies.bernoulli(targets, logits).tolist()]
      [1.3863, 1.3863]
    """
    value, prediction = _same_shape("bernoulli", value, prediction)
    log_p = jax.nn.log_sigmoid(prediction)
    log_not_p = jax.nn.log_sigmoid(-prediction)
    return -_sum_features(value * log_p + (1.0 - value) * log_not_p)


def masked(energy: Callable[[Array, Array], Array], mask: Array) -> Callable[[Array, Array], Array]:
    """Restricts ``energy`` to the entries where ``mask`` is 1.

    For inference from a partial observation, e.g. the top half of an image:
    ``output_energy=masked(squared_error, mask)``. Masked-out entries give no
    gradient (and a constant energy: zero for ``squared_error``).

    Args:
      energy: an energy ``(value, prediction) -> [B]``.
      mask: ``0``/``1`` array broadcastable to the value's shape.

    Returns:
      The masked energy, ``(value, prediction) -> [B]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax_pc import energies
      >>> value = jnp.array([[1.0, 2.0], [0.0, 0.0]])
      >>> prediction = jnp.array([[1.0, 0.0], [1.0, 1.0]])
      >>> first = energies.masked(energies.squared_error, jnp.array([1.0, 0.0]))
      >>> first(value, prediction).tolist()  # the second feature is not seen
      [0.0, 0.5]
    """

    def masked_energy(value: Array, prediction: Array) -> Array:
        return energy(value * mask, prediction * mask)

    return masked_energy
