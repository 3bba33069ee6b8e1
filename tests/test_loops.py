"""train_epoch: one jit over the epoch equals the per-batch train_step loop."""

import jax
import numpy as np
import optax
import pytest
from helpers import assert_trees_close
from pc_models import MLP

import flax_pc as fpc

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((50, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(50) % 3]


def _state():
    model = MLP()
    params = model.init(jax.random.key(1), X)["params"]
    return fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
        inference=fpc.Inference(optax.sgd(0.1), 3),
    )  # fmt: skip


def test_epoch_equals_the_batch_loop():
    key = jax.random.key(5)
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size", "shuffle"))
    state, metrics = epoch(_state(), X, Y, key, batch_size=16)
    assert metrics["energy"].shape == (3, 4)

    order_key, _ = jax.random.split(key)
    order = np.asarray(jax.random.permutation(order_key, 50))
    expected = _state()
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    for b in range(3):
        idx = order[b * 16 : (b + 1) * 16]
        expected, batch_metrics = step(expected, X[idx], Y[idx])
        np.testing.assert_allclose(metrics["energy"][b], batch_metrics["energy"], rtol=1e-6)
    assert_trees_close(state.params, expected.params, rtol=1e-6, atol=1e-7)
    assert int(state.step) == 3


def test_epoch_without_shuffle_takes_batches_in_order():
    # Numpy data, train_epoch not jitted: it takes host arrays as they are.
    state, _ = fpc.train_epoch(_state(), X, Y, jax.random.key(0), batch_size=25, shuffle=False)
    expected = _state()
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    for b in range(2):
        expected, _ = step(expected, X[b * 25 : (b + 1) * 25], Y[b * 25 : (b + 1) * 25])
    assert_trees_close(state.params, expected.params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch_size", [0, 51, 2.5])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        fpc.train_epoch(_state(), X, Y, jax.random.key(0), batch_size=batch_size)
