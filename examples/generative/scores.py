"""How much a generative model's samples look like the data: scores from a backprop classifier.

The classifier (:class:`Classifier`, an MLP) is trained by plain backprop on
the run's own training images and labels, by :func:`train_classifier`, with a
fixed seed and data order, so every run on the same data scores with the same
classifier (the same weights on the same machine); it takes seconds on a CPU.
A run trains it once and keeps it in its workdir (:data:`CLASSIFIER_FILE`).

:func:`sample_scores` scores images, e.g. 10,000 samples of the model:

- ``confident``: the share the classifier labels with a probability of at
  least :data:`CONFIDENCE` (quality: it sees a garment, not a blotch);
- ``label_entropy``: the entropy, in nats, of the labels it gives (diversity:
  ``ln 10 = 2.30`` when every class is as frequent, 0 when all are one class);
- ``frechet_distance``: the Fréchet distance between Gaussians fitted to the
  classifier's hidden features of the images and of the test images (as FID,
  with this classifier in place of Inception; 0 for the test set's own
  distribution; lower is closer to the data).

The same scores of the held-out test images are the reference: what samples
indistinguishable from the data would get.
"""

from __future__ import annotations

import pathlib
from typing import Any, cast

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

#: The file in the workdir that keeps the classifier's params.
CLASSIFIER_FILE = "classifier.msgpack"
#: The probability of its label above which the classifier is confident of an image.
CONFIDENCE = 0.9
#: The classifier's training: passes over the training set, batch size, Adam's learning rate.
EPOCHS, BATCH_SIZE, LEARNING_RATE = 4, 128, 1e-3


class Classifier(nn.Module):
    """``784 -> 256 -> 256 -> num_classes``, relu; ``features=True``: the last hidden layer."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array, features: bool = False) -> jax.Array:
        x = images.reshape((images.shape[0], -1))
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return x if features else nn.Dense(self.num_classes)(x)


def train_classifier(images: np.ndarray, labels: np.ndarray) -> Any:
    """The params of a :class:`Classifier` trained by backprop (cross-entropy, Adam).

    Args:
      images: the training images, ``[N, ...]`` in ``[0, 1]``.
      labels: their labels, ``[N]`` int.
    """
    model, tx = Classifier(), optax.adam(LEARNING_RATE)
    flat = jnp.asarray(images.reshape(len(images), -1))
    params = model.init(jax.random.key(0), flat[:1])["params"]

    def step(carry, batch):
        params, opt_state, images, labels = carry

        def loss(params):
            logits = cast(jax.Array, model.apply({"params": params}, images[batch]))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[batch]).mean()

        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
        return (optax.apply_updates(params, updates), opt_state, images, labels), None

    @jax.jit
    def train(params, images, labels, key):
        steps = len(images) // BATCH_SIZE
        orders = [
            jax.random.permutation(k, len(images))[: steps * BATCH_SIZE].reshape(steps, -1)
            for k in jax.random.split(key, EPOCHS)
        ]
        carry = (params, tx.init(params), images, labels)
        (params, *_), _ = jax.lax.scan(step, carry, jnp.concatenate(orders))
        return params

    return train(params, flat, jnp.asarray(labels), jax.random.key(1))


def load_or_train(path: pathlib.Path, images: np.ndarray, labels: np.ndarray) -> Any:
    """The classifier's params from ``path``, or :func:`train_classifier`'s, saved there."""
    if path.is_file():
        template = Classifier().init(jax.random.key(0), jnp.zeros((1, images[0].size)))["params"]
        return flax.serialization.from_bytes(template, path.read_bytes())
    params = train_classifier(images, labels)
    path.write_bytes(flax.serialization.to_bytes(params))
    return params


@jax.jit
def _probabilities_and_features(params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    images = images.reshape((images.shape[0], -1))
    features = Classifier().apply({"params": params}, images, features=True)
    logits = Classifier().apply({"params": params}, images)
    return jax.nn.softmax(cast(jax.Array, logits)), cast(jax.Array, features)


def accuracy(params: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """The classifier's share of correct labels on ``images``."""
    probabilities, _ = _probabilities_and_features(params, jnp.asarray(images))
    return float(np.mean(np.argmax(probabilities, -1) == labels))


def confident_share(probabilities: np.ndarray) -> float:
    """The share of rows of ``probabilities`` ``[N, classes]`` whose largest is >= CONFIDENCE."""
    return float(np.mean(np.max(probabilities, -1) >= CONFIDENCE))


def label_entropy(probabilities: np.ndarray) -> float:
    """The entropy (nats) of the frequencies of the labels (argmax) of ``probabilities``."""
    classes = probabilities.shape[-1]
    frequency = np.bincount(np.argmax(probabilities, -1), minlength=classes) / len(probabilities)
    frequency = frequency[frequency > 0]
    return float(-np.sum(frequency * np.log(frequency)))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``, ``[N, D]``.

    ``‖m_a − m_b‖² + tr(C_a + C_b − 2 (C_a C_b)^½)``, with the means ``m`` and
    covariances ``C`` of the rows (float64). ``tr (C_a C_b)^½`` is that of the
    symmetric ``(C_a^½ C_b C_a^½)^½``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a.T)), np.atleast_2d(np.cov(b.T))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def sample_scores(params: Any, images: np.ndarray, data_images: np.ndarray) -> dict[str, float]:
    """``confident``, ``label_entropy`` and ``frechet_distance`` of ``images`` (module doc).

    Args:
      params: the classifier's params.
      images: the images to score, ``[N, ...]`` in ``[0, 1]``.
      data_images: the data to compare with (the test images), ``[M, ...]``.
    """
    probabilities, features = _probabilities_and_features(params, jnp.asarray(images))
    _, data_features = _probabilities_and_features(params, jnp.asarray(data_images))
    probabilities = np.asarray(probabilities)
    return {
        "confident": confident_share(probabilities),
        "label_entropy": label_entropy(probabilities),
        "frechet_distance": frechet_distance(np.asarray(features), np.asarray(data_features)),
    }
