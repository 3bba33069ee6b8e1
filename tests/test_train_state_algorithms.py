"""The learning rules and output nudging, each against its definition."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_pc as ref
from helpers import assert_trees_close
from pc_models import MLP

import flax_pc as fpc

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((12, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(12) % 3]


def _state(model=None, **kwargs):
    model = model or MLP()
    params = model.init(jax.random.key(2), X)["params"]
    options: dict[str, Any] = dict(tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 3))
    options.update(kwargs)
    return fpc.PCTrainState.create(apply_fn=model.apply, params=params, **options)


def _assert_weights(params, weights, atol=1e-6):
    """Flax params against the reference's ``[(kernel, bias), ...]``."""
    assert_trees_close(ref.from_flax(params), weights, atol=atol)


def test_ipc_is_three_joint_steps_by_hand():
    state = _state(algorithm="ipc")
    weights = ref.from_flax(state.params)
    adam = optax.adam(1e-2)
    opt_state = adam.init(weights)
    values, _ = ref.feed_forward(weights, X)
    energies = []
    for _ in range(3):
        # Both gradients at the same (values, weights), then both applied.
        energies.append(ref.energy(weights, X, values, Y))
        grads = ref.weight_gradients(weights, X, values, Y)
        values = ref.node_step(weights, X, values, Y, 0.1)
        updates, opt_state = adam.update(grads, opt_state, weights)
        weights = optax.apply_updates(weights, updates)
    energies.append(ref.energy(weights, X, values, Y))

    new_state, metrics = jax.jit(lambda s: s.train_step(X, Y))(state)
    _assert_weights(new_state.params, weights)
    np.testing.assert_allclose(metrics["energy"], np.array(energies) / 12, rtol=1e-5)
    assert int(new_state.step) == 3


def test_ipc_needs_inference_steps():
    with pytest.raises(ValueError, match="ipc"):
        _state(algorithm="ipc", inference=fpc.Inference(optax.sgd(0.1), 0))


def test_bp_equals_an_independent_optax_loop():
    model = MLP()
    state = _state(model, algorithm="bp")
    params = state.params
    adam = optax.adam(1e-2)
    opt_state = adam.init(params)

    @jax.jit
    def optax_step(params, opt_state, x, y):
        def loss(p):
            return jnp.sum(0.5 * jnp.sum((y - model.apply({"params": p}, x)) ** 2, axis=-1))

        grads = jax.grad(loss)(params)
        updates, opt_state = adam.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    for i in range(6):
        x, y = X * (1 + 0.1 * i), jnp.roll(Y, i, axis=0)
        state, metrics = step(state, x, y)
        params, opt_state = optax_step(params, opt_state, x, y)
    assert_trees_close(state.params, params, atol=1e-6)
    assert metrics["node_energies"] == {}


@pytest.mark.parametrize("beta", [1.0, 0.3, -0.2])
def test_nudging_follows_its_definition(beta):
    state = _state(tx=optax.sgd(1.0), nudging=beta)
    weights = ref.from_flax(state.params)
    values, out = ref.feed_forward(weights, X)
    target = out - beta * (out - Y)  # the nudged clamp, fixed during inference
    for _ in range(3):
        values = ref.node_step(weights, X, values, target, 0.1)
    grads = ref.weight_gradients(weights, X, values, target)
    expected = [(k - g_k / beta, b - g_b / beta) for (k, b), (g_k, g_b) in zip(weights, grads)]
    new_state, _ = state.train_step(X, Y)
    _assert_weights(new_state.params, expected, atol=1e-5)


def test_nudging_with_beta_one_is_clamping():
    clamped, _ = _state().train_step(X, Y)
    nudged, _ = _state(nudging=1.0).train_step(X, Y)
    assert_trees_close(clamped, nudged, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "output_energy, targets, probabilities",
    [
        (fpc.energies.cross_entropy, Y, jax.nn.softmax),
        (fpc.energies.bernoulli, np.abs(np.sin(np.arange(36.0))).reshape(12, 3), jax.nn.sigmoid),
    ],
    ids=["cross_entropy", "bernoulli"],
)
def test_nudging_of_logits_mixes_probabilities(output_energy, targets, probabilities):
    """Without inference steps only the output layer learns, from ``(p - t) / beta`` with
    ``t = p - beta * (p - y)``: backprop's ``p - y``, whatever beta."""
    beta = 0.3
    state = _state(
        tx=optax.sgd(1.0), output_energy=output_energy, nudging=beta,
        inference=fpc.Inference(optax.sgd(0.1), 0),
    )  # fmt: skip
    new_state, _ = state.train_step(X, targets)
    weights = ref.from_flax(state.params)
    values, logits = ref.feed_forward(weights, X)
    error = probabilities(logits) - targets  # d energy / d logits, by hand
    kernel, bias = weights[-1]
    expected = [*weights[:-1], (kernel - values[-1].T @ error, bias - error.sum(0))]
    _assert_weights(new_state.params, expected, atol=1e-5)


def _cosines(grads, reference):
    result = []
    for i, (k, b) in enumerate(reference):
        got = np.concatenate([np.ravel(grads[f"Dense_{i}"]["kernel"]), grads[f"Dense_{i}"]["bias"]])
        want = np.concatenate([np.ravel(k), b])
        result.append(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    return np.array(result)


def test_small_nudging_does_not_converge_to_backprop_unlike_weak_precision():
    beta = 1e-3
    y = 2 * Y

    def gradient(**kwargs):
        state = _state(tx=optax.sgd(1.0), inference=fpc.Inference(optax.sgd(0.2), 400), **kwargs)
        new_state, _ = state.train_step(X, y)
        return jax.tree_util.tree_map(lambda a, b: a - b, state.params, new_state.params)

    backprop = ref.backprop_gradients(ref.from_flax(_state().params), X, y)
    weak = _cosines(gradient(output_energy=lambda t, o: beta * fpc.energies.squared_error(t, o)),
                    backprop)  # fmt: skip
    nudged = _cosines(gradient(nudging=beta), backprop)
    assert np.all(weak > 0.9999), weak
    assert np.min(nudged) < 0.999, nudged


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(nudging=0.0), ValueError),
        (dict(nudging="0.1"), TypeError),
        (dict(nudging=0.1, algorithm="bp"), ValueError),
        (dict(nudging=-0.2, output_energy=fpc.energies.cross_entropy), ValueError),
        (dict(nudging=1.5, output_energy=fpc.energies.bernoulli), ValueError),
    ],
)
def test_bad_nudging(kwargs, error):
    with pytest.raises(error, match="nudging"):
        _state(**kwargs)
