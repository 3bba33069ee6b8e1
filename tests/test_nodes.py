"""PCNode: modes from collections, initialisers, errors."""

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from pc_models import MLP

import flax_pc as fpc
from flax_pc._src import initialization
from flax_pc._src import nodes as nodes_lib

# A NumPy constant: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((5, 4), np.float32)


def _params(model, x=X):
    return model.init(jax.random.key(1), x)["params"]


def test_params_only_apply_is_the_plain_network():
    model = MLP()
    params = _params(model)
    plain = MLP(with_nodes=False)
    np.testing.assert_array_equal(
        model.apply({"params": params}, X), plain.apply({"params": params}, X)
    )
    # And against the network written in numpy.
    h = np.asarray(X)
    for i in range(3):
        layer = params[f"Dense_{i}"]
        h = h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])
        h = np.tanh(h) if i < 2 else h
    out = np.asarray(model.apply({"params": params}, X))
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)


def test_params_only_apply_accepts_any_batch_size():
    model = MLP()
    params = _params(model)
    assert jnp.asarray(model.apply({"params": params}, jnp.ones((17, 4)))).shape == (17, 3)


def test_forward_initialisation_sets_value_to_prediction():
    model = MLP()
    params = _params(model)
    out, variables = model.apply({"params": params}, X, mutable=[fpc.NODES])
    boxed = variables[fpc.NODES]
    assert set(boxed) == {"PCNode_0", "PCNode_1"}
    # New values come boxed with how they were made; nn.meta.unbox gives the arrays.
    new_value = boxed["PCNode_0"]["value"]
    assert isinstance(new_value, nodes_lib.NewLatent)
    assert new_value.forward
    nodes = nn.meta.unbox(boxed)
    dense = {name: jnp.asarray(a) for name, a in params["Dense_0"].items()}
    first = jnp.tanh(X @ dense["kernel"] + dense["bias"])
    np.testing.assert_allclose(nodes["PCNode_0"]["value"], first, rtol=1e-6)
    np.testing.assert_array_equal(out, model.apply({"params": params}, X))


def test_stored_values_are_returned_and_energies_sown():
    model = MLP()
    params = _params(model)
    nodes = fpc.init_nodes(model.apply, params, X)
    shifted = jax.tree_util.tree_map(lambda v: v + 0.5, nodes)
    out, state = model.apply({"params": params, fpc.NODES: shifted}, X, mutable=[fpc.ENERGIES])
    sown = fpc.node_energies(state[fpc.ENERGIES])
    # PCNode_0's prediction does not depend on nodes: energy = 0.5 * 0.5^2 * width.
    np.testing.assert_allclose(sown["PCNode_0"], np.full(5, 0.5 * 0.25 * 8), rtol=1e-5)
    kernel, bias = params["Dense_2"]["kernel"], params["Dense_2"]["bias"]
    np.testing.assert_allclose(out, shifted["PCNode_1"]["value"] @ kernel + bias, rtol=1e-5)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.relu(nn.Conv(4, (3, 3))(x)))
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_node_on_conv_feature_maps():
    model = ConvNet()
    x = jnp.ones((3, 6, 6, 1))
    params = model.init(jax.random.key(0), x)["params"]
    nodes = fpc.init_nodes(model.apply, params, x)
    assert nodes["PCNode_0"]["value"].shape == (3, 6, 6, 4)
    _, state = model.apply({"params": params, fpc.NODES: nodes}, x, mutable=[fpc.ENERGIES])
    np.testing.assert_array_equal(fpc.node_energies(state[fpc.ENERGIES])["PCNode_0"], np.zeros(3))


class Initialised(nn.Module):
    value_init: Literal["forward", "zeros", "normal"]
    precision: float = 1.0

    @nn.compact
    def __call__(self, x):
        return fpc.PCNode(
            value_init=self.value_init, value_init_stddev=0.5, precision=self.precision
        )(x)


def test_zeros_and_normal_initialisers():
    x = jnp.ones((4, 3))
    zeros = fpc.init_nodes(Initialised("zeros").apply, {}, x)
    np.testing.assert_array_equal(zeros["PCNode_0"]["value"], np.zeros((4, 3)))
    key = jax.random.key(7)
    normal = fpc.init_nodes(Initialised("normal").apply, {}, x, rng=key)
    again = fpc.init_nodes(Initialised("normal").apply, {}, x, rng=key)
    np.testing.assert_array_equal(normal["PCNode_0"]["value"], again["PCNode_0"]["value"])
    # init_nodes folds the latent's path into the noise key; the draw is N(0, 0.5^2).
    values = np.asarray(normal["PCNode_0"]["value"])
    assert values.std() > 0.1 and not np.allclose(values, 1.0)
    big = fpc.init_nodes(Initialised("normal").apply, {}, jnp.ones((4000, 3)), rng=key)
    assert abs(np.std(big["PCNode_0"]["value"]) - 0.5) < 0.02
    assert abs(np.mean(big["PCNode_0"]["value"])) < 0.02


def test_normal_initialiser_without_key_is_a_clear_error():
    with pytest.raises(ValueError, match="rng"):
        fpc.init_nodes(Initialised("normal").apply, {}, jnp.ones((2, 3)))


def test_unknown_initialiser():
    with pytest.raises(ValueError, match="init must be one of"):
        fpc.init_nodes(
            Initialised("uniform").apply,  # pyright: ignore[reportArgumentType]
            {},
            jnp.ones((2, 3)),
        )


def test_precision_scales_the_energy():
    x = jnp.ones((2, 3))
    nodes = {"PCNode_0": {"value": jnp.zeros((2, 3))}}
    _, state = Initialised("forward", precision=4.0).apply(
        {fpc.NODES: nodes}, x, mutable=[fpc.ENERGIES]
    )
    np.testing.assert_allclose(fpc.node_energies(state[fpc.ENERGIES])["PCNode_0"], [6.0, 6.0])


def test_energies_without_nodes_is_a_clear_error():
    model = MLP()
    params = _params(model)
    with pytest.raises(ValueError, match="no value nodes"):
        model.apply({"params": params}, X, mutable=[fpc.ENERGIES])


def test_nodes_from_another_batch_size_is_a_clear_error():
    model = MLP()
    params = _params(model)
    nodes = fpc.init_nodes(model.apply, params, X)
    with pytest.raises(ValueError, match="batch of another size"):
        model.apply({"params": params, fpc.NODES: nodes}, jnp.ones((7, 4)), mutable=[fpc.ENERGIES])


class ZerosThenForward(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = fpc.PCNode(value_init="zeros")(nn.Dense(3)(x))
        return fpc.PCNode()(nn.Dense(2)(h))


def test_forward_initialisation_continues_from_the_new_value():
    model = ZerosThenForward()
    x = jnp.ones((4, 5))
    params = model.init(jax.random.key(0), x)["params"]
    nodes = fpc.init_nodes(model.apply, params, x)
    # The upper node is initialised from the zeros below it, so its error is zero.
    np.testing.assert_allclose(
        nodes["PCNode_1"]["value"],
        np.broadcast_to(np.asarray(params["Dense_1"]["bias"]), (4, 2)),
        atol=1e-7,
    )
    _, state = model.apply({"params": params, fpc.NODES: nodes}, x, mutable=[fpc.ENERGIES])
    np.testing.assert_array_equal(fpc.node_energies(state[fpc.ENERGIES])["PCNode_1"], np.zeros(4))


def test_forward_flag_needs_the_squared_error_energy():
    """The first-step shortcut assumes a zero energy gradient at v = mu."""

    class Custom(nn.Module):
        energy: Callable[[jax.Array, jax.Array], jax.Array] = fpc.energies.squared_error

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(fpc.PCNode(energy=self.energy)(nn.tanh(nn.Dense(4)(x))))

    params = Custom().init(jax.random.key(1), X)["params"]
    assert initialization.initialize(Custom().apply, params, X).forward
    # Cross-entropy's gradient at v = mu is not zero: no shortcut.
    hidden_ce = Custom(energy=fpc.energies.cross_entropy)
    assert not initialization.initialize(hidden_ce.apply, params, X).forward
