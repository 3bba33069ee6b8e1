"""with_nodes: PC for a linen model written without PCNodes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import assert_trees_close, create_state, train_losses
from pc_models import MLP

import flax_pc as fpc

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(6) % 3]


def _state(apply_fn, params, **kwargs):
    defaults = dict(tx=optax.adam(1e-2), node_tx=optax.sgd(0.1), inference_steps=3)
    return create_state(apply_fn=apply_fn, params=params, **{**defaults, **kwargs})


@pytest.mark.parametrize("algorithm", ["pc", "ipc", "bp"])
def test_equals_the_same_mlp_with_hand_written_nodes(algorithm):
    plain, hand = MLP(with_nodes=False), MLP()
    params = plain.init(jax.random.key(1), X)["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        hand.init(jax.random.key(1), X)["params"]
    )
    auto = fpc.with_nodes(plain.apply, layers=(nn.Dense,))
    np.testing.assert_array_equal(auto({"params": params}, X), plain.apply({"params": params}, X))
    nodes = fpc.init_nodes(auto, params, X)
    assert set(nodes) == {"Dense_1", "Dense_2"}
    assert nodes["Dense_1"]["input"]["value"].shape == (6, 8)
    step = jax.jit(lambda s: s.train_step(X, Y))
    a = _state(auto, params, algorithm=algorithm)
    b = _state(hand.apply, params, algorithm=algorithm)
    for _ in range(3):
        a, a_metrics = step(a)
        b, b_metrics = step(b)
        np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-6)
    assert_trees_close(a.params, b.params, rtol=1e-6, atol=1e-7)
    assert jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(params)


class PlainCNN(nn.Module):
    """Flax's MNIST CNN, at a quarter of its width."""

    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
        return nn.Dense(3)(x)


def test_a_cnn_trains():
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    y = jax.nn.one_hot(jnp.arange(16) % 3, 3)
    params = PlainCNN().init(jax.random.key(1), x)["params"]
    auto = fpc.with_nodes(PlainCNN().apply)
    nodes = fpc.init_nodes(auto, params, x)
    shapes = {k: v["input"]["value"].shape for k, v in nodes.items()}
    assert shapes == {"Conv_1": (16, 4, 4, 8), "Dense_0": (16, 64), "Dense_1": (16, 32)}
    state = _state(auto, params, node_tx=optax.sgd(0.05), inference_steps=8)
    losses, metrics = train_losses(state, x, y, steps=30)
    assert losses[-1] < 0.3 * losses[0]
    assert sum(float(e) for e in metrics["node_energies"].values()) > 0


def test_node_kwargs_reach_the_nodes():
    plain = MLP(with_nodes=False)
    params = plain.init(jax.random.key(1), X)["params"]
    zeros = fpc.with_nodes(plain.apply, layers=(nn.Dense,), value_init="zeros")
    nodes = fpc.init_nodes(zeros, params, X)
    assert all(float(jnp.abs(v["input"]["value"]).max()) == 0 for v in nodes.values())
    one = fpc.with_nodes(plain.apply, layers=(nn.Dense,), value_init="zeros")
    two = fpc.with_nodes(plain.apply, layers=(nn.Dense,), value_init="zeros", precision=2.0)
    e1 = fpc.node_energies(fpc.energy(one, params, nodes, X, Y).nodes)
    e2 = fpc.node_energies(fpc.energy(two, params, nodes, X, Y).nodes)
    for name in e1:
        np.testing.assert_allclose(e2[name], 2 * e1[name], rtol=1e-6)
    assert float(e1["Dense_1/input"].sum()) > 0  # tanh(Dense_0(x)) against a zero value
    errors = fpc.init_nodes(fpc.with_nodes(plain.apply, latent="error"), params, X)
    assert all(set(v["input"]) == {"error"} for v in errors.values())  # ePC nodes


def test_batchnorm_dropout_model_and_train_epoch():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x)))
            x = nn.Dropout(0.2, deterministic=not train)(x)
            return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))

    model = Net()
    variables = model.init(jax.random.key(1), X)
    state = _state(
        fpc.with_nodes(functools.partial(model.apply, train=True), layers=(nn.Dense,)),
        variables["params"],
        model_state={"batch_stats": variables["batch_stats"]},
    )
    x, y = jnp.tile(X, (4, 1)), jnp.tile(Y, (4, 1))
    state, metrics = jax.jit(fpc.train_epoch, static_argnames="batch_size")(
        state, x, y, jax.random.key(3), batch_size=6
    )
    assert set(metrics["node_energies"]) == {"Dense_1/input", "Dense_2/input"}
    assert float(jnp.abs(state.model_state["batch_stats"]["BatchNorm_0"]["mean"]).max()) > 0
    with pytest.raises(ValueError, match="RNG stream 'dropout'"):
        state.train_step(X, Y)


def test_setup_style_model_and_a_tied_layer():
    class Tied(nn.Module):
        def setup(self):
            self.first = nn.Dense(8)
            self.shared = nn.Dense(8)
            self.out = nn.Dense(3)

        def __call__(self, x):
            h = nn.tanh(self.first(x))
            h = nn.tanh(self.shared(h))
            h = nn.tanh(self.shared(h))  # the same weights, a second call site
            return self.out(h)

    params = Tied().init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(Tied().apply, layers=(nn.Dense,))
    nodes = fpc.init_nodes(auto, params, X)
    assert set(nodes["shared"]) == {"input", "input_1"}
    state, metrics = jax.jit(lambda s: s.train_step(X, Y))(_state(auto, params))
    assert np.all(np.diff(np.asarray(metrics["energy"], np.float64)) <= 1e-6)


def test_a_model_without_listed_layers_is_an_error():
    plain = MLP(with_nodes=False)
    params = plain.init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(plain.apply, layers=(nn.Conv,))
    with pytest.raises(ValueError, match="no layer of the types listed in layers \\(Conv\\)"):
        fpc.init_nodes(auto, params, X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=()), "non-empty tuple of linen Module types"),
        (dict(layers=(int,)), "non-empty tuple of linen Module types"),
        (dict(init="zeros"), "with_nodes got \\['init'\\]"),
        (dict(value_init="ones"), None),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        auto = fpc.with_nodes(MLP(with_nodes=False).apply, **kwargs)
        params = MLP(with_nodes=False).init(jax.random.key(1), X)["params"]
        fpc.init_nodes(auto, params, X)
