"""One set of node rules: linen's ``fpc.PCNode`` and ``fpc.nnx.PCNode`` side by side.

Each test builds one network twice, as a linen module and as an NNX module
whose nodes sit at the same paths (``name='node'`` in linen, ``self.node`` in
NNX) and whose params have the same layout, so the NNX params run the linen
model. The two paths must draw the same ``value_init='normal'`` values for the
same key, and say the same thing for the same mistake.
"""

import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import flax_pc as fpc
from flax_pc._src import rngs as rngs_lib
from flax_pc._src.node_rules import NewLatent

X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.eye(2, dtype=np.float32)[np.arange(6) % 2]
WIDTH, DEPTH = 5, 3
KEY = jax.random.key(11)
#: The noise stream's key that a bare ``KEY`` gives, on both paths.
NOISE_KEY = rngs_lib.as_rngs(KEY)[fpc.NOISE]  # type: ignore[index]


def half_squares(value, prediction):
    """Not a per-example energy: ``[B, F]`` instead of ``[B]``."""
    return 0.5 * (value - prediction) ** 2


class LinenNet(nn.Module):
    """first -> tanh -> node -> second -> tanh -> top -> out, the nodes named as NNXNet's."""

    node_options: tuple = ()  # PCNode's arguments as (name, value) pairs

    @nn.compact
    def __call__(self, x):
        options = dict(self.node_options)
        h = fpc.PCNode(name="node", **options)(nn.tanh(nn.Dense(WIDTH, name="first")(x)))
        h = fpc.PCNode(name="top", **options)(nn.tanh(nn.Dense(WIDTH, name="second")(h)))
        return nn.Dense(2, name="out")(h)


class NNXNet(nnx.Module):
    def __init__(self, rngs, **node_options):
        self.first = nnx.Linear(4, WIDTH, rngs=rngs)
        self.node = fpc.nnx.PCNode(**node_options)
        self.second = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.top = fpc.nnx.PCNode(**node_options)
        self.out = nnx.Linear(WIDTH, 2, rngs=rngs)

    def __call__(self, x):
        h = self.node(nnx.tanh(self.first(x)))
        return self.out(self.top(nnx.tanh(self.second(h))))


def _twins(**node_options):
    """The NNX model, and the linen model with the NNX model's params."""
    model = NNXNet(nnx.Rngs(0), **node_options)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return LinenNet(tuple(node_options.items())), params, model


def _nnx_nodes(model):
    """The NNX model's nodes as a plain ``NODES`` collection."""
    return nnx.to_pure_dict(nnx.state(model, fpc.nnx.NodeValue))


def _reference_draw(key, path, shape, stddev):
    """The rule, written out: the noise key folded with a constant, then with the path's CRC-32."""
    salted = jax.random.fold_in(key, zlib.crc32(b"value_init"))
    return stddev * jax.random.normal(jax.random.fold_in(salted, zlib.crc32(path.encode())), shape)


# --- The same draws ---------------------------------------------------------------


@pytest.mark.parametrize("latent", ["value", "error"])
def test_normal_nodes_draw_the_same_values_on_both_paths(latent):
    linen, params, model = _twins(value_init="normal", value_init_stddev=0.5, latent=latent)
    linen_nodes = fpc.init_nodes(linen.apply, params, X, rng=KEY)
    fpc.nnx.init_nodes(model, X, rngs=KEY)
    nnx_nodes = _nnx_nodes(model)
    assert set(linen_nodes) == set(nnx_nodes) == {"node", "top"}
    for name in ("node", "top"):
        np.testing.assert_array_equal(linen_nodes[name][latent], nnx_nodes[name][latent])
    # Each node its own draw; the values are N(0, 0.5^2) by the rule, whatever the latent.
    first = np.tanh(X @ params["first"]["kernel"] + params["first"]["bias"])
    v_node = _reference_draw(NOISE_KEY, f"node/{latent}", (6, WIDTH), 0.5)
    top_prediction = jnp.tanh(v_node @ params["second"]["kernel"] + params["second"]["bias"])
    v_top = _reference_draw(NOISE_KEY, f"top/{latent}", (6, WIDTH), 0.5)
    if latent == "value":
        expected = {"node": v_node, "top": v_top}
    else:  # e = v - mu, mu the prediction from the drawn value below
        expected = {"node": v_node - first, "top": v_top - top_prediction}
    for name in ("node", "top"):
        np.testing.assert_allclose(linen_nodes[name][latent], expected[name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(v_node, v_top)


def test_energies_after_a_normal_initialisation_match_plain_jax():
    linen, params, model = _twins(value_init="normal", value_init_stddev=2.0)
    nodes = fpc.init_nodes(linen.apply, params, X, rng=KEY)
    linen_energy = fpc.energy(linen.apply, params, nodes, X, Y)
    fpc.nnx.init_nodes(model, X, rngs=KEY)
    nnx_energy = fpc.nnx.energy(model, X, Y)

    def dense(layer, h):
        return h @ params[layer]["kernel"] + params[layer]["bias"]

    v_node = _reference_draw(NOISE_KEY, "node/value", (6, WIDTH), 2.0)
    v_top = _reference_draw(NOISE_KEY, "top/value", (6, WIDTH), 2.0)
    expected = {
        "node": 0.5 * jnp.sum((v_node - jnp.tanh(dense("first", X))) ** 2, axis=1),
        "top": 0.5 * jnp.sum((v_top - jnp.tanh(dense("second", v_node))) ** 2, axis=1),
    }
    output = 0.5 * jnp.sum((Y - dense("out", v_top)) ** 2, axis=1)
    for result in (linen_energy, nnx_energy):
        node_energies = fpc.node_energies(result.nodes)
        for name in ("node", "top"):
            np.testing.assert_allclose(node_energies[name], expected[name], rtol=1e-5)
        np.testing.assert_allclose(
            result.per_example, expected["node"] + expected["top"] + output, rtol=1e-5
        )


def test_a_train_step_of_normal_nodes_is_the_same_on_both_paths():
    linen, params, model = _twins(value_init="normal", latent="error")
    inference = fpc.Inference(optax.sgd(0.1), 3)
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=params, tx=optax.sgd(0.05), inference=inference
    )
    _, linen_metrics = jax.jit(lambda s: s.train_step(X, Y, KEY))(state)
    optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
    nnx_metrics = nnx.jit(
        lambda m, o: fpc.nnx.train_step(m, o, X, Y, inference=inference, rngs=KEY)
    )(model, optimizer)
    np.testing.assert_allclose(nnx_metrics["energy"], linen_metrics["energy"], rtol=1e-5)


class LinenBlock(nn.Module):
    node_options: tuple = ()

    @nn.compact
    def __call__(self, x, _=None):
        h = nn.tanh(nn.Dense(WIDTH, name="linear")(x))
        return x + fpc.PCNode(name="node", **dict(self.node_options))(h), None


class LinenStack(nn.Module):
    node_options: tuple = ()

    @nn.compact
    def __call__(self, x):
        blocks = nn.scan(
            LinenBlock,
            variable_axes={"params": 0, fpc.NODES: 0, fpc.ENERGIES: 0},
            split_rngs={"params": True},
            length=DEPTH,
        )
        x = fpc.PCNode(name="node", **dict(self.node_options))(nn.Dense(WIDTH, name="first")(x))
        x, _ = blocks(self.node_options, name="blocks")(x, None)
        return nn.Dense(2, name="out")(x)


class NNXBlock(nnx.Module):
    def __init__(self, rngs, **node_options):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.node = fpc.nnx.PCNode(**node_options)

    def __call__(self, x):
        return x + self.node(nnx.tanh(self.linear(x)))


class NNXStack(nnx.Module):
    """``LinenStack`` in NNX: blocks stacked by ``nnx.vmap`` and run by ``nnx.scan``."""

    def __init__(self, rngs, **node_options):
        self.first = nnx.Linear(4, WIDTH, rngs=rngs)
        self.node = fpc.nnx.PCNode(**node_options)

        @nnx.split_rngs(splits=DEPTH)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return NNXBlock(rngs, **node_options)

        self.blocks = blocks(rngs)
        self.out = nnx.Linear(WIDTH, 2, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.out(body(self.node(self.first(x)), self.blocks))


@pytest.mark.parametrize("latent", ["value", "error"])
def test_stacked_normal_nodes_draw_the_same_values_on_both_paths(latent):
    options = dict(value_init="normal", latent=latent)
    model = NNXStack(nnx.Rngs(0), **options)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    linen = LinenStack(tuple(options.items()))
    linen_nodes = fpc.init_nodes(linen.apply, params, X, rng=KEY)
    fpc.nnx.init_nodes(model, X, rngs=KEY)
    nnx_nodes = _nnx_nodes(model)
    stacked = linen_nodes["blocks"]["node"][latent]
    assert stacked.shape == (DEPTH, 6, WIDTH)
    np.testing.assert_array_equal(stacked, nnx_nodes["blocks"]["node"][latent])
    np.testing.assert_array_equal(linen_nodes["node"][latent], nnx_nodes["node"][latent])
    # One draw for the whole stack: a value per layer.
    values = _reference_draw(NOISE_KEY, f"blocks/node/{latent}", (DEPTH, 6, WIDTH), 1.0)
    if latent == "value":
        np.testing.assert_allclose(stacked, values, rtol=1e-6)
    assert not np.allclose(values[0], values[1])
    # The energies at the drawn nodes agree too.
    linen_energy = fpc.energy(linen.apply, params, linen_nodes, X, Y)
    np.testing.assert_allclose(linen_energy.total, fpc.nnx.energy(model, X, Y).total, rtol=1e-5)


def test_model_init_needs_no_key_for_normal_nodes():
    linen, params, _ = _twins(value_init="normal")
    variables = linen.init(jax.random.key(0), X)
    np.testing.assert_array_equal(variables[fpc.NODES]["node"]["value"], np.zeros((6, WIDTH)))
    assert jax.tree_util.tree_map(jnp.shape, variables["params"]) == jax.tree_util.tree_map(
        jnp.shape, params
    )


def test_apply_with_nodes_mutable_leaves_a_placeholder_that_asks_for_the_draw():
    linen, params, _ = _twins(value_init="normal", value_init_stddev=0.3)
    _, collections = linen.apply({"params": params}, X, mutable=[fpc.NODES])
    box = collections[fpc.NODES]["node"]["value"]
    assert isinstance(box, NewLatent)
    assert box.draw_stddev == 0.3 and not box.forward
    np.testing.assert_array_equal(nn.meta.unbox(box), np.zeros((6, WIDTH)))


# --- The same mistakes, the same messages -------------------------------------------


def _message(make) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    return str(info.value)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (dict(value_init="uniform"), r"PCNode\(value_init='uniform'\): value_init must be one of"),
        (dict(latent="errors"), r"PCNode\(latent='errors'\): latent must be 'value'"),
        (dict(energy=2.0), r"PCNode\(energy=...\) must be callable .* got float"),
        (
            dict(value_init_stddev="wide"),
            r"PCNode\(value_init_stddev='wide'\): value_init_stddev must",
        ),
    ],
)
def test_a_bad_option_is_the_same_error_when_the_node_is_made(option, expected):
    linen = _message(lambda: fpc.PCNode(**option))
    assert linen == _message(lambda: fpc.nnx.PCNode(**option))
    assert re.match(expected, linen), linen
    # Inside a model, the linen node is made (and checked) by its parent's call.
    with pytest.raises((ValueError, TypeError), match=expected):
        LinenNet(tuple(option.items())).init(jax.random.key(0), X)


def test_an_energy_of_the_wrong_shape_is_the_same_error():
    linen, params, model = _twins(energy=half_squares)
    nodes = fpc.init_nodes(linen.apply, params, X)
    message = _message(lambda: fpc.energy(linen.apply, params, nodes, X, Y))
    fpc.nnx.init_nodes(model, X)
    assert message == _message(lambda: fpc.nnx.energy(model, X, Y))
    assert message.startswith(f"PCNode at node: its energy returned shape (6, {WIDTH}); ")
    assert "[B] = (6,)" in message


def test_a_node_called_twice_is_the_same_error():
    class LinenTwice(nn.Module):
        @nn.compact
        def __call__(self, x):
            node, dense = fpc.PCNode(name="node"), nn.Dense(4, name="hidden")
            return nn.Dense(2, name="out")(node(dense(node(dense(x)))))

    class NNXTwice(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 4, rngs=rngs)
            self.node = fpc.nnx.PCNode()
            self.out = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(self.node(self.hidden(self.node(self.hidden(x)))))

    model = NNXTwice(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    message = _message(lambda: fpc.init_nodes(LinenTwice().apply, params, X))
    assert message == _message(lambda: fpc.nnx.init_nodes(model, X))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    targets, inference = jnp.zeros((X.shape[0], 2)), fpc.Inference(optax.sgd(0.1), 2)
    step = lambda: fpc.nnx.train_step(model, optimizer, X, targets, inference=inference)  # noqa: E731
    assert message == _message(step)
    assert message.startswith("PCNode at node was called twice in one pass.")


def test_a_stored_latent_of_another_shape_is_the_same_error():
    linen, params, model = _twins(latent="error")
    nodes = fpc.init_nodes(linen.apply, params, X)
    message = _message(lambda: fpc.energy(linen.apply, params, nodes, X[:4], Y[:4]))
    fpc.nnx.init_nodes(model, X)
    nnx_message = _message(lambda: fpc.nnx.energy(model, X[:4], Y[:4]))
    # The same words; each names its own path's init_nodes.
    assert message.endswith("with flax_pc.init_nodes.")
    assert nnx_message.endswith("with fpc.nnx.init_nodes.")
    assert message.replace("flax_pc.init_nodes", "fpc.nnx.init_nodes") == nnx_message
    assert message.startswith(
        f"PCNode at node: the stored error has shape (6, {WIDTH}) but the prediction has "
        f"shape (4, {WIDTH})."
    )


def test_energies_without_nodes_is_the_same_error_up_to_the_fix():
    linen, params, model = _twins()
    message = _message(lambda: fpc.energy(linen.apply, params, {}, X, Y))
    nnx_message = _message(lambda: fpc.nnx.energy(model, X, Y))
    problem = (
        "PCNode at node: energies were asked for but no value nodes were given: this node "
        "has no value for the batch. "
    )
    assert message.startswith(problem) and nnx_message.startswith(problem)
    assert "flax_pc.init_nodes" in message and "fpc.nnx.init_nodes(model, inputs)" in nnx_message


def test_a_normal_node_without_a_key_is_the_same_error():
    linen, params, model = _twins(value_init="normal")
    message = _message(lambda: fpc.init_nodes(linen.apply, params, X))
    assert message == _message(lambda: fpc.nnx.init_nodes(model, X))
    assert message.startswith(
        "PCNode at node (value_init='normal') draws its initial value from the RNG stream "
        "'pc_noise', but no key was given for it: pass rng=key"
    )
    assert "rngs= to fpc.nnx.init_nodes" in message
    # A dict of other streams gives no noise key either.
    assert message == _message(lambda: fpc.init_nodes(linen.apply, params, X, rng={"dropout": KEY}))
