"""The temporal PC models of the example, the system they track, and its Kalman filter.

Each tPC model takes the latent inferred at the previous step (held fixed)
and predicts the step's observation; its :class:`flax_pc.PCNode` named
``'latent'`` holds the latent that ``fpc.temporal`` carries to the next step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from flax import linen as nn

import flax_pc as fpc


class Tracker(nn.Module):
    """A linear-Gaussian tPC model: ``z_t = A z_{t-1} + noise``, ``y_t = C z_t + noise``.

    Its energy at a step, ``precision/2 |z_t - A z_{t-1}|^2 + 1/2 |y_t - C z_t|^2``
    (the output energy is squared error), is the negative log-posterior of
    ``z_t`` given ``y_t`` and the previous estimate, scaled by the observation
    noise's variance ``R``, when ``precision = R / Q`` (``Q``: the process
    noise's variance).

    Attributes:
      latent_size: the dimension of ``z``.
      observation_size: the dimension of ``y``.
      precision: the latent node's precision, ``R / Q``.
    """

    latent_size: int = 2
    observation_size: int = 10
    precision: float = 1.0

    @nn.compact
    def __call__(self, previous: jax.Array) -> jax.Array:
        """The prediction of ``y_t`` ``[B, observation_size]`` from ``z_{t-1}`` ``[B, latent]``."""
        prior = nn.Dense(self.latent_size, use_bias=False, name="A")(previous)
        z = fpc.PCNode(precision=self.precision, name="latent")(prior)
        return nn.Dense(self.observation_size, use_bias=False, name="C")(z)


def tracker_params(A: np.ndarray, C: np.ndarray) -> dict:
    """:class:`Tracker`'s params for the matrices ``A``, ``C`` (a Dense computes ``x @ kernel``)."""
    return {
        "A": {"kernel": np.asarray(A.T, np.float32)},
        "C": {"kernel": np.asarray(C.T, np.float32)},
    }


class SequenceMemory(nn.Module):
    """The 2-layer tPC of sequence memory (Tang et al., 2023): a hidden latent, a decoder.

    ``z_t = W_r tanh(z_{t-1}) + noise`` (the latent node), and the frame
    ``x_t = W_out tanh(z_t) + b + noise`` (the output, clamped to the frame in
    training). The latent carries the context: two steps with the same frame
    can have different latents, hence different successors.

    Attributes:
      hidden_size: the dimension of the latent ``z``.
      image_size: the number of pixels of a frame.
    """

    hidden_size: int = 256
    image_size: int = 784

    @nn.compact
    def __call__(self, previous: jax.Array) -> jax.Array:
        """The prediction of frame ``t`` ``[B, image_size]`` from the latent ``z_{t-1}``."""
        prior = nn.Dense(self.hidden_size, use_bias=False, name="recurrent")(nn.tanh(previous))
        z = fpc.PCNode(name="latent")(prior)
        return nn.Dense(self.image_size, name="decoder")(nn.tanh(z))


class Classifier(nn.Module):
    """An MLP trained by backprop that reads recalled frames: ``[B, 784]`` -> logits ``[B, 10]``."""

    hidden_size: int = 256

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        return nn.Dense(10)(nn.relu(nn.Dense(self.hidden_size)(images)))


# --- The tracked system ----------------------------------------------------------


class System(NamedTuple):
    """A linear dynamical system and a run of it.

    Attributes:
      A: ``[2, 2]``, the dynamics (a damped rotation).
      C: ``[D, 2]``, the observation matrix.
      states: ``[T, 2]``, the hidden states ``x_1 ... x_T``.
      observations: ``[T, D]``, ``y_t = C x_t + noise``, float32.
    """

    A: np.ndarray
    C: np.ndarray
    states: np.ndarray
    observations: np.ndarray


def rotation_system(
    *,
    angle: float,
    damping: float,
    process_noise: float,
    observation_noise: float,
    observation_size: int,
    length: int,
    seed: int,
    matrix_seed: int = 0,
) -> System:
    """A run of ``x_t = A x_{t-1} + w_t``, ``y_t = C x_t + v_t`` from ``x_0 = 0``.

    ``A`` rotates by ``angle`` radians and scales by ``damping``; ``C`` is a
    random projection with ``N(0, 1/D)`` entries (``matrix_seed``); ``w_t``
    and ``v_t`` are Gaussian with variances ``process_noise`` and
    ``observation_noise`` (``seed`` draws them).
    """
    c, s = np.cos(angle), np.sin(angle)
    A = damping * np.array([[c, -s], [s, c]])
    C = np.random.default_rng(matrix_seed).normal(size=(observation_size, 2))
    C /= np.sqrt(observation_size)
    rng = np.random.default_rng(seed)
    x, states, observations = np.zeros(2), [], []
    for _ in range(length):
        x = A @ x + rng.normal(size=2) * np.sqrt(process_noise)
        states.append(x)
        observations.append(C @ x + rng.normal(size=observation_size) * np.sqrt(observation_noise))
    return System(A, C, np.array(states), np.array(observations, np.float32))


def kalman_filter(
    A: np.ndarray,
    C: np.ndarray,
    observations: np.ndarray,
    process_noise: float,
    observation_noise: float,
) -> np.ndarray:
    """The Kalman filter's posterior means ``E[x_t | y_1..t]`` ``[T, 2]`` (``x_0 = 0`` known)."""
    mean, covariance, means = np.zeros(len(A)), np.zeros_like(A), []
    for y in np.asarray(observations, np.float64):
        mean, covariance = A @ mean, A @ covariance @ A.T + process_noise * np.eye(len(A))
        innovation = C @ covariance @ C.T + observation_noise * np.eye(len(y))
        gain = covariance @ C.T @ np.linalg.inv(innovation)
        mean = mean + gain @ (y - C @ mean)
        covariance = covariance - gain @ C @ covariance
        means.append(mean)
    return np.array(means)
