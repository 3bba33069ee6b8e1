"""Energies against hand-written numpy formulas."""

import numpy as np
import pytest

from flax_pc import energies

RNG = np.random.default_rng(0)


def test_squared_error_matches_formula():
    v = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    mu = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    expected = 0.5 * ((v - mu) ** 2).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(energies.squared_error(v, mu), expected, rtol=1e-6)


def test_cross_entropy_matches_formula():
    logits = RNG.normal(size=(6, 10)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[RNG.integers(0, 10, size=6)]
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(labels * log_softmax).sum(-1)
    np.testing.assert_allclose(energies.cross_entropy(labels, logits), expected, rtol=1e-5)


def test_bernoulli_matches_formula():
    logits = RNG.normal(size=(4, 7)).astype(np.float32) * 3
    t = RNG.uniform(size=(4, 7)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits))
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(-1)
    np.testing.assert_allclose(energies.bernoulli(t, logits), expected, rtol=1e-5)


@pytest.mark.parametrize("fn", [energies.squared_error, energies.cross_entropy, energies.bernoulli])
def test_energies_are_per_example(fn):
    out = fn(np.zeros((5, 2, 3), np.float32), np.ones((5, 2, 3), np.float32))
    assert out.shape == (5,)
