"""Diagnostics: layer energies in network order, the energy ratio, the activity Hessian, the
alignment of PC's weight gradient with backprop's."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_pc as ref
from flax import linen as nn
from pc_models import MLP

import flax_pc as fpc


class LinearChain(nn.Module):
    """``depth`` linear layers without bias, a node after each but the last."""

    depth: int
    width: int = 1

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth - 1):
            x = fpc.PCNode()(nn.Dense(self.width, use_bias=False)(x))
        return nn.Dense(x.shape[-1] if self.width == 1 else 2, use_bias=False)(x)


#: One compile of the Hessian (op by op, jax.hessian compiles each of its many ops).
_activity_hessian = jax.jit(fpc.diagnostics.activity_hessian, static_argnums=0)


def _constant_weights(params, weight):
    return jax.tree_util.tree_map(lambda k: jnp.full_like(k, weight), params)


@pytest.mark.parametrize(("hidden", "weight"), [(3, 0.5), (6, 1.0), (10, 2.0)])
def test_condition_number_of_a_scalar_linear_chain_is_the_closed_form(hidden, weight):
    # F = sum_l (v_l - w v_{l-1})^2 / 2 + (y - w v_H)^2 / 2: the Hessian is the
    # tridiagonal Toeplitz matrix (1 + w^2, -w), whose eigenvalues are
    # 1 + w^2 - 2 w cos(k pi / (H + 1)), k = 1..H.
    with jax.enable_x64(True):
        model = LinearChain(depth=hidden + 1)
        x, y = jnp.ones((1, 1), jnp.float64), jnp.full((1, 1), 0.3, jnp.float64)
        params = _constant_weights(
            jax.eval_shape(model.init, jax.random.key(0), x)["params"], weight
        )
        nodes = fpc.init_nodes(model.apply, params, x)
        hessian = _activity_hessian(model.apply, params, nodes, x, y)
        assert hessian.shape == (hidden, hidden)
        c = math.cos(math.pi / (hidden + 1))
        expected = (1 + weight**2 + 2 * weight * c) / (1 + weight**2 - 2 * weight * c)
        np.testing.assert_allclose(
            fpc.diagnostics.hessian_condition_number(hessian), expected, rtol=1e-9
        )


def test_hessian_of_a_vector_linear_chain_is_the_block_matrix():
    with jax.enable_x64(True):
        model = LinearChain(depth=4, width=3)
        x = jax.random.normal(jax.random.key(1), (1, 2), jnp.float64)
        y = jax.random.normal(jax.random.key(2), (1, 2), jnp.float64)
        params = jax.jit(model.init)(jax.random.key(0), x)["params"]
        params = jax.tree_util.tree_map(lambda k: k.astype(jnp.float64), params)
        nodes = fpc.init_nodes(model.apply, params, x)
        hessian = np.asarray(_activity_hessian(model.apply, params, nodes, x, y))
        # Dense kernels are [in, out]: mu_{l+1} = v_l K_{l+1}, so with A = K^T,
        # the block of v_l is I + A_{l+1}^T A_{l+1} and the coupling of v_l and v_{l+1} is -A_{l+1}.
        matrices = [np.asarray(params[f"Dense_{i}"]["kernel"]).T for i in range(4)]
        expected = np.zeros((9, 9))
        for layer in range(3):
            block = slice(3 * layer, 3 * layer + 3)
            above = matrices[layer + 1]
            expected[block, block] = np.eye(3) + above.T @ above
            if layer < 2:
                following = slice(3 * layer + 3, 3 * layer + 6)
                expected[following, block] = -above
                expected[block, following] = -above.T
        np.testing.assert_allclose(hessian, expected, rtol=1e-10, atol=1e-12)


def test_layer_energies_come_in_network_order_and_the_ratio_is_first_over_last():
    model = LinearChain(depth=13, width=2)
    x = jax.random.normal(jax.random.key(1), (4, 2))
    y = jax.random.normal(jax.random.key(2), (4, 2))
    params = model.init(jax.random.key(0), x)["params"]
    nodes = fpc.init_nodes(model.apply, params, x)
    nodes = jax.tree_util.tree_map(
        lambda v: v + jax.random.normal(jax.random.key(3), v.shape), nodes
    )
    sown = fpc.energy(model.apply, params, nodes, x, y).nodes
    layers = fpc.diagnostics.layer_energies(sown)
    assert list(layers) == [f"PCNode_{i}" for i in range(12)]  # PCNode_2 before PCNode_10
    flat = fpc.node_energies(sown)
    assert all(np.array_equal(layers[k], flat[k]) for k in flat)
    expected = np.mean(flat["PCNode_0"]) / np.mean(flat["PCNode_11"])
    np.testing.assert_allclose(fpc.diagnostics.energy_ratio(sown), expected, rtol=1e-6)
    # train_step's metrics['node_energies'] ({path: batch mean}) works too.
    means = {path: jnp.mean(value) for path, value in flat.items()}
    np.testing.assert_allclose(fpc.diagnostics.energy_ratio(means), expected, rtol=1e-6)


def test_the_ratio_shows_that_pc_errors_reach_the_first_layer_late():
    model = LinearChain(depth=6, width=3)
    x = jax.random.normal(jax.random.key(1), (4, 2))
    y = jax.random.normal(jax.random.key(2), (4, 2))
    params = model.init(jax.random.key(0), x)["params"]
    ratios = []
    for steps in (1, 4, 5):
        nodes = fpc.init_nodes(model.apply, params, x)
        nodes, _ = fpc.infer(
            model.apply, params, nodes, x, y, inference=fpc.Inference(optax.sgd(0.1), steps)
        )
        ratios.append(
            float(fpc.diagnostics.energy_ratio(fpc.energy(model.apply, params, nodes, x, y).nodes))
        )
    # The error moves down one layer per step: the first of 5 nodes has none before step 5.
    assert ratios[0] == 0 and ratios[1] == 0 and ratios[2] > 0


def test_diagnostics_need_nodes():
    model = nn.Dense(2)
    x = jnp.ones((1, 2))
    params = model.init(jax.random.key(0), x)["params"]
    with pytest.raises(ValueError, match="at least one PCNode"):
        fpc.diagnostics.energy_ratio({})
    with pytest.raises(ValueError, match="at least one PCNode"):
        fpc.diagnostics.activity_hessian(model.apply, params, {}, x, x)


# --- Gradient alignment with backprop --------------------------------------------


def _mlp_state(**kwargs):
    model = MLP()
    x = np.random.default_rng(0).standard_normal((12, 4), np.float32)
    params = model.init(jax.random.key(2), x)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
        inference=fpc.Inference(optax.sgd(0.1), 3), **kwargs,
    )  # fmt: skip
    return state, x


def test_gradient_alignment_is_the_cosine_of_hand_derived_gradients():
    state, x = _mlp_state()
    y = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    weights = ref.from_flax(state.params)
    values, _ = ref.feed_forward(weights, x)
    for _ in range(3):
        values = ref.node_step(weights, x, values, y, 0.1)
    pc = ref.weight_gradients(weights, x, values, y)
    bp = ref.backprop_gradients(weights, x, y)

    alignment = fpc.diagnostics.gradient_alignment(state, x, y)

    expected_cosine, expected_ratio = {}, {}
    for i, ((pc_k, pc_b), (bp_k, bp_b)) in enumerate(zip(pc, bp)):
        for name, a, b in (("kernel", pc_k, bp_k), ("bias", pc_b, bp_b)):
            a, b = np.ravel(a), np.ravel(b)
            expected_cosine[f"Dense_{i}/{name}"] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            expected_ratio[f"Dense_{i}/{name}"] = np.linalg.norm(a) / np.linalg.norm(b)
    assert list(alignment.cosine) == [
        f"Dense_{i}/{n}" for i in range(3) for n in ("bias", "kernel")
    ]
    for path, cosine in expected_cosine.items():
        np.testing.assert_allclose(alignment.cosine[path], cosine, rtol=1e-4, err_msg=path)
        np.testing.assert_allclose(alignment.norm_ratio[path], expected_ratio[path], rtol=1e-4)
    flat_pc = np.concatenate([np.ravel(a) for layer in pc for a in layer])
    flat_bp = np.concatenate([np.ravel(a) for layer in bp for a in layer])
    total = flat_pc @ flat_bp / (np.linalg.norm(flat_pc) * np.linalg.norm(flat_bp))
    np.testing.assert_allclose(alignment.total, total, rtol=1e-4)
    # The output layer sees the same error in both (forward initialisation, 3 steps):
    # only its input moved, so it is close to backprop's but not equal.
    assert 0.9 < float(alignment.cosine["Dense_2/kernel"]) < 1


@pytest.mark.parametrize("algorithm", ["ipc", "bp"])
def test_gradient_alignment_needs_pc(algorithm):
    state, x = _mlp_state(algorithm=algorithm)
    with pytest.raises(ValueError, match=f"compares algorithm='pc'.*{algorithm!r}"):
        fpc.diagnostics.gradient_alignment(state, x, np.zeros((12, 3), np.float32))
