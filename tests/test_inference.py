"""init_nodes / energy / infer against the hand-derived equations."""

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
X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.random.default_rng(1).standard_normal((6, 3), np.float32)


def _setup(**kwargs):
    model = MLP(**kwargs)
    params = model.init(jax.random.key(2), X)["params"]
    return model, params


def _sgd_state(model, params, *, learning_rate, node_learning_rate, steps):
    """A train state with plain SGD on the weights and on the nodes."""
    return fpc.PCTrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=optax.sgd(learning_rate),
        inference=fpc.Inference(optax.sgd(node_learning_rate), steps),
    )


def _perturbed(nodes, seed=3, scale=0.3):
    leaves, tree = jax.tree_util.tree_flatten(nodes)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [v + scale * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


def _values(nodes):
    return [nodes[f"PCNode_{i}"]["value"] for i in range(len(nodes))]


def test_after_forward_init_hidden_energies_are_zero_and_total_is_output_loss():
    model, params = _setup()
    nodes = fpc.init_nodes(model.apply, params, X)
    result = fpc.energy(model.apply, params, nodes, X, Y)
    for value in fpc.node_energies(result.nodes).values():
        np.testing.assert_array_equal(value, np.zeros(6))
    out = np.asarray(model.apply({"params": params}, X))
    loss = 0.5 * np.sum((np.asarray(Y) - out) ** 2)
    np.testing.assert_allclose(result.total, loss, rtol=1e-6)
    np.testing.assert_allclose(result.output, 0.5 * np.sum((Y - out) ** 2, axis=-1), rtol=1e-6)


def test_energy_matches_reference_at_arbitrary_nodes():
    model, params = _setup()
    nodes = _perturbed(fpc.init_nodes(model.apply, params, X))
    result = fpc.energy(model.apply, params, nodes, X, Y)
    expected = ref.energy(ref.from_flax(params), X, _values(nodes), Y)
    np.testing.assert_allclose(result.total, expected, rtol=1e-5)
    np.testing.assert_allclose(result.per_example.sum(), expected, rtol=1e-5)


def test_one_sgd_step_is_the_hand_derived_update():
    model, params = _setup()
    nodes = _perturbed(fpc.init_nodes(model.apply, params, X))
    lr = 0.1
    new_nodes, trajectory = fpc.infer(
        model.apply, params, nodes, X, Y, inference=fpc.Inference(optax.sgd(lr), 1)
    )
    expected = ref.node_step(ref.from_flax(params), X, _values(nodes), Y, lr)
    assert_trees_close(_values(new_nodes), expected, rtol=1e-5, atol=1e-6)
    assert trajectory.total.shape == (1,)


def test_energy_never_increases_with_a_small_node_learning_rate():
    model, params = _setup(features=(16, 16, 16))
    state = _sgd_state(model, params, learning_rate=0.0, node_learning_rate=0.01, steps=50)
    _, metrics = jax.jit(lambda s: s.train_step(X, 3 * Y))(state)
    energy = np.asarray(metrics["energy"])
    assert energy.shape == (51,)
    assert np.all(np.diff(energy) <= 1e-7), energy
    assert energy[-1] < 0.95 * energy[0]


def test_linear_network_converges_to_the_closed_form_equilibrium():
    # F = 0.5|v - W1 x - b1|^2 + 0.5|y - W2 v - b2|^2  =>
    # (I + W2 W2^T) v = W1 x + b1 + W2 (y - b2)   (Flax kernels are [in, out])
    model, params = _setup(features=(5,), activation="linear")
    nodes = fpc.init_nodes(model.apply, params, X)
    new_nodes, _ = fpc.infer(
        model.apply, params, nodes, X, Y, inference=fpc.Inference(optax.sgd(0.2), 300)
    )
    k1, b1 = (np.asarray(params["Dense_0"][name]) for name in ("kernel", "bias"))
    k2, b2 = (np.asarray(params["Dense_1"][name]) for name in ("kernel", "bias"))
    a = np.eye(5) + k2 @ k2.T
    rhs = X @ k1 + b1 + (Y - b2) @ k2.T
    equilibrium = np.linalg.solve(a, rhs.T).T
    np.testing.assert_allclose(new_nodes["PCNode_0"]["value"], equilibrium, atol=1e-5)


def test_the_default_unroll_rule():
    # unroll=None: every step unrolled up to T = 32, a rolled loop beyond (compile
    # time bounded whatever T; figures in benchmarks/README.md).
    tx = optax.sgd(0.1)
    assert [fpc.Inference(tx, t).scan_unroll for t in (0, 1, 4, 32)] == [True] * 4
    assert [fpc.Inference(tx, t).scan_unroll for t in (33, 512, 4000)] == [1] * 3
    assert fpc.Inference(tx, 4, unroll=False).scan_unroll is False
    assert fpc.Inference(tx, 4000, unroll=8).scan_unroll == 8


def test_four_thousand_inference_steps_reach_the_closed_form_equilibrium():
    # The equilibrium check the field uses: T = 4000 compiles as one rolled loop.
    model, params = _setup(features=(5,), activation="linear")
    nodes = fpc.init_nodes(model.apply, params, X)
    new_nodes, energies = jax.jit(
        lambda n: fpc.infer(
            model.apply, params, n, X, Y, inference=fpc.Inference(optax.sgd(0.01), 4000)
        )
    )(nodes)
    assert energies.total.shape == (4000,)
    total = np.asarray(energies.total)
    assert np.all(np.diff(total) <= 1e-5)
    k1, b1 = (jnp.asarray(params["Dense_0"][name]) for name in ("kernel", "bias"))
    k2, b2 = (jnp.asarray(params["Dense_1"][name]) for name in ("kernel", "bias"))
    a = np.eye(5) + np.asarray(k2) @ np.asarray(k2).T
    rhs = np.asarray(X @ k1 + b1 + (Y - b2) @ k2.T)
    equilibrium = np.linalg.solve(a, rhs.T).T
    np.testing.assert_allclose(new_nodes["PCNode_0"]["value"], equilibrium, atol=1e-5)


@pytest.mark.parametrize("steps", [32, 33])
def test_unrolled_and_rolled_loops_agree(steps):
    model, params = _setup()
    nodes = _perturbed(fpc.init_nodes(model.apply, params, X))
    run = {
        unroll: fpc.infer(
            model.apply,
            params,
            nodes,
            X,
            Y,
            inference=fpc.Inference(optax.sgd(0.1), steps, unroll=unroll),
        )
        for unroll in (None, True, False)
    }
    for unroll in (True, False):
        assert_trees_close(run[None], run[unroll], rtol=1e-5, atol=1e-6)


def test_zero_inference_steps_gives_backprop_on_the_last_layer_only():
    model, params = _setup()
    state = _sgd_state(model, params, learning_rate=1.0, node_learning_rate=0.1, steps=0)
    new_state, metrics = state.train_step(X, Y)
    grads = ref.from_flax(jax.tree.map(lambda a, b: a - b, params, new_state.params))  # lr = 1
    backprop = ref.backprop_gradients(ref.from_flax(params), X, Y)
    assert_trees_close(grads[:2], jax.tree.map(np.zeros_like, grads[:2]), rtol=0, atol=0)
    assert_trees_close(grads[2], backprop[2], rtol=1e-5, atol=1e-6)
    assert metrics["energy"].shape == (1,)


def test_weak_output_precision_approaches_backprop():
    """Whittington & Bogacz (2017): with output precision beta -> 0, dF/dW / beta -> dL/dW."""
    beta = 1e-3
    model, params = _setup(features=(8, 8))
    y = 2 * Y

    def weak(t, out):
        return beta * fpc.energies.squared_error(t, out)

    nodes = fpc.init_nodes(model.apply, params, X)
    nodes, _ = fpc.infer(
        model.apply,
        params,
        nodes,
        X,
        y,
        inference=fpc.Inference(optax.sgd(0.2), 400),
        output_energy=weak,
    )
    grads = jax.grad(lambda p: fpc.energy(model.apply, p, nodes, X, y, output_energy=weak).total)(
        params
    )
    backprop = ref.backprop_gradients(ref.from_flax(params), X, y)
    for i in range(3):
        for got, want in zip(
            (grads[f"Dense_{i}"]["kernel"], grads[f"Dense_{i}"]["bias"]), backprop[i]
        ):
            got, want = np.ravel(got) / beta, np.ravel(want)
            cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
            assert cosine > 0.9999, (i, cosine)
            np.testing.assert_allclose(np.linalg.norm(got), np.linalg.norm(want), rtol=0.02)


def test_node_gradients_do_not_depend_on_batch_size():
    model, params = _setup()
    nodes = _perturbed(fpc.init_nodes(model.apply, params, X))
    half = jax.tree_util.tree_map(lambda v: v[:3], nodes)
    full_nodes, _ = fpc.infer(
        model.apply, params, nodes, X, Y, inference=fpc.Inference(optax.sgd(0.1), 5)
    )
    half_nodes, _ = fpc.infer(
        model.apply, params, half, X[:3], Y[:3], inference=fpc.Inference(optax.sgd(0.1), 5)
    )
    first_half = [v[:3] for v in _values(full_nodes)]
    assert_trees_close(first_half, _values(half_nodes), rtol=1e-6, atol=1e-7)


def test_targets_of_the_wrong_shape():
    model, params = _setup()
    nodes = fpc.init_nodes(model.apply, params, X)
    with pytest.raises(ValueError, match="one_hot"):
        fpc.energy(model.apply, params, nodes, X, jnp.zeros((6,), jnp.int32))
    with pytest.raises(ValueError, match=r"targets have shape \(6, 4\)"):
        fpc.energy(model.apply, params, nodes, X, jnp.zeros((6, 4)))


@pytest.mark.parametrize("steps, error", [(-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_inference_steps(steps, error):
    model, params = _setup()
    nodes = fpc.init_nodes(model.apply, params, X)
    with pytest.raises(error, match="steps must be"):
        fpc.infer(model.apply, params, nodes, X, Y, inference=fpc.Inference(optax.sgd(0.1), steps))


def test_non_optax_node_tx():
    model, params = _setup()
    nodes = fpc.init_nodes(model.apply, params, X)
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        fpc.infer(
            model.apply, params, nodes, X, Y,
            inference=fpc.Inference(0.1, 2),  # pyright: ignore[reportArgumentType]
        )  # fmt: skip
