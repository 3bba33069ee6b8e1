"""fpc.nnx: an NNX model trains by the same maths as its linen twin (weights copied across).

Each test builds the linen and the NNX version of one network, copies the
linen weights into the NNX model, and compares what the two paths compute:
energies, node values, metrics, updated weights and running averages.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from helpers import assert_trees_close

import flax_pc as fpc

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((12, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
RTOL = 1e-5


class LinenNet(nn.Module):
    """Dense (-> BatchNorm) -> tanh -> PCNode per hidden layer, then a Dense output."""

    widths: Sequence[int] = (8, 8)
    outputs: int = 3
    batch_norm: bool = False
    node_options: tuple = ()  # PCNode's arguments as (name, value) pairs
    train: bool = True

    @nn.compact
    def __call__(self, x):
        for width in self.widths:
            x = nn.Dense(width)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not self.train, momentum=0.9)(x)
            x = fpc.PCNode(**dict(self.node_options))(nn.tanh(x))
        return nn.Dense(self.outputs)(x)


class NNXNet(nnx.Module):
    """``LinenNet`` in NNX: ``layers[i]`` is ``Dense_i``, ``norms[i]`` is ``BatchNorm_i``."""

    def __init__(
        self, widths=(8, 8), inputs=4, outputs=3, *, rngs, batch_norm=False, dropout=0.0,
        nodes=True, **node_options,
    ):  # fmt: skip
        sizes = (inputs, *widths)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.norms = (
            nnx.List([nnx.BatchNorm(w, momentum=0.9, rngs=rngs) for w in widths])
            if batch_norm
            else None
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.nodes = nnx.List([fpc.nnx.PCNode(**node_options) for _ in widths]) if nodes else None
        self.out = nnx.Linear(widths[-1], outputs, rngs=rngs)

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = jnp.tanh(x)
            if self.dropout is not None:
                x = self.dropout(x)
            if self.nodes is not None:
                x = self.nodes[i](x)
        return self.out(x)


def _twins(batch_norm=False, **node_options):
    """A linen net (its variables) and an NNX net with the same weights."""
    linen = LinenNet(batch_norm=batch_norm, node_options=tuple(node_options.items()))
    variables = linen.init(jax.random.key(2), X)
    model = NNXNet(rngs=nnx.Rngs(5), batch_norm=batch_norm, **node_options)
    nnx.update(model, _as_nnx(variables, len(model.layers)))
    return linen, variables, model


def _as_nnx(variables, hidden):
    params = variables["params"]
    state = {
        "layers": {i: dict(params[f"Dense_{i}"]) for i in range(hidden)},
        "out": dict(params[f"Dense_{hidden}"]),
    }
    if "batch_stats" in variables:
        state["norms"] = {
            i: {**params[f"BatchNorm_{i}"], **variables["batch_stats"][f"BatchNorm_{i}"]}
            for i in range(hidden)
        }
    return state


def _as_linen(model):
    """The NNX net's params (and running averages) in the linen layout."""
    hidden = len(model.layers)
    params = {f"Dense_{i}": _arrays(model.layers[i], nnx.Param) for i in range(hidden)}
    params[f"Dense_{hidden}"] = _arrays(model.out, nnx.Param)
    stats = {}
    if model.norms is not None:
        for i, norm in enumerate(model.norms):
            params[f"BatchNorm_{i}"] = _arrays(norm, nnx.Param)
            stats[f"BatchNorm_{i}"] = _arrays(norm, nnx.BatchStat)
    return params, stats


def _arrays(module, kind):
    return nnx.to_pure_dict(nnx.state(module, kind))


def _latent(node: fpc.nnx.PCNode) -> fpc.nnx.NodeValue:
    """``node.value``, or ``node.error`` for ePC: the node names the attribute by its latent."""
    return getattr(node, node.latent)


def _nnx_step(**options):
    traces = []

    @nnx.jit
    def step(model, optimizer, x, y):
        traces.append(None)
        return fpc.nnx.train_step(model, optimizer, x, y, **options)

    return step, traces


def _ordered(node_energies):
    return [node_energies[k] for k in fpc.diagnostics.layer_energies(node_energies)]


def _side_by_side(state, model, optimizer, options, steps=3):
    """``steps`` linen and NNX steps on ``(X, Y)``, their energies equal at each.

    Returns the linen state and both last metrics.
    """
    linen_step = jax.jit(lambda s: s.train_step(X, Y))
    nnx_step, traces = _nnx_step(**options)
    for _ in range(steps):
        state, expected = linen_step(state)
        metrics = nnx_step(model, optimizer, X, Y)
        np.testing.assert_allclose(metrics["energy"], expected["energy"], rtol=RTOL)
    assert len(traces) == 1
    return state, expected, metrics


PC: dict[str, Any] = dict(inference=fpc.Inference(optax.sgd(0.1), 3))
ALGORITHMS = {
    "pc": dict(PC),
    "ipc": dict(PC, algorithm="ipc"),
    "bp": dict(PC, algorithm="bp"),
    "nudging": dict(PC, nudging=0.5),
    "negative nudging": dict(PC, nudging=-0.3),
    "tolerance": dict(inference=fpc.Inference(optax.sgd(0.2), 50, tolerance=1e-3)),
}


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_train_step_equals_the_linen_step_over_several_steps(name):
    options = ALGORITHMS[name]
    linen, variables, model = _twins()
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=variables["params"], tx=optax.adam(1e-2), **options
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    linen_step = jax.jit(lambda s, x, y: s.train_step(x, y))
    nnx_step, traces = _nnx_step(**options)
    for i in range(4):
        x, y = X * (1 + 0.1 * i), np.roll(Y, i, axis=0)
        state, expected = linen_step(state, x, y)
        metrics = nnx_step(model, optimizer, x, y)
        assert set(metrics) == set(expected)
        for key in ("energy", "loss", "inference_steps"):
            np.testing.assert_allclose(metrics[key], expected[key], rtol=RTOL, err_msg=key)
        np.testing.assert_allclose(
            _ordered(metrics["node_energies"]), _ordered(expected["node_energies"]), rtol=RTOL
        )
        assert_trees_close(_as_linen(model)[0], state.params, rtol=RTOL, atol=1e-7)
    assert int(optimizer.step[...]) == int(state.step)
    assert len(traces) == 1  # the step compiled once


@pytest.mark.parametrize(
    "node_options",
    [{}, {"latent": "error"}, {"value_init": "zeros", "precision": 0.5}],
    ids=["value", "epc", "zeros+precision"],
)
def test_nodes_inference_and_energy_equal_linen(node_options):
    linen, variables, model = _twins(**node_options)
    params = variables["params"]
    nodes = fpc.init_nodes(linen.apply, params, X)
    state = fpc.nnx.init_nodes(model, X)
    name = "error" if node_options.get("latent") == "error" else "value"
    for i in range(2):
        np.testing.assert_allclose(
            np.asarray(state["nodes"][i][name][...]), nodes[f"PCNode_{i}"][name]
        )

    nodes, expected = fpc.infer(
        linen.apply, params, nodes, X, Y, inference=fpc.Inference(optax.sgd(0.1), 5)
    )
    energies = fpc.nnx.infer(model, X, Y, inference=fpc.Inference(optax.sgd(0.1), 5))
    np.testing.assert_allclose(energies.total, expected.total, rtol=RTOL)
    after = nnx.state(model, fpc.nnx.NodeValue)
    for i in range(2):
        np.testing.assert_allclose(
            np.asarray(after["nodes"][i][name][...]),
            nodes[f"PCNode_{i}"][name],
            rtol=RTOL,
            atol=1e-7,
        )

    result = fpc.nnx.energy(model, X, Y)
    reference = fpc.energy(linen.apply, params, nodes, X, Y)
    np.testing.assert_allclose(result.per_example, reference.per_example, rtol=RTOL)
    layers = fpc.diagnostics.layer_energies(result.nodes)
    assert list(layers) == ["nodes/0", "nodes/1"]
    np.testing.assert_allclose(
        list(layers.values()),
        list(fpc.diagnostics.layer_energies(reference.nodes).values()),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        fpc.diagnostics.energy_ratio(result.nodes),
        fpc.diagnostics.energy_ratio(reference.nodes),
        rtol=RTOL,
    )

    # The weight gradient at the nodes, by nnx.grad, is the linen one.
    grads = nnx.grad(lambda m: fpc.nnx.energy(m, X, Y).total)(model)
    expected_grads = jax.grad(lambda p: fpc.energy(linen.apply, p, nodes, X, Y).total)(params)
    got = {f"Dense_{i}": nnx.to_pure_dict(grads["layers"][i]) for i in range(2)}
    got["Dense_2"] = nnx.to_pure_dict(grads["out"])
    assert_trees_close(got, expected_grads, rtol=RTOL, atol=1e-7)


def test_epc_train_step_equals_linen():
    linen, variables, model = _twins(latent="error")
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=variables["params"], tx=optax.sgd(0.1), **PC
    )
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    state, _, _ = _side_by_side(state, model, optimizer, PC)
    assert_trees_close(_as_linen(model)[0], state.params, rtol=RTOL, atol=1e-7)


def test_infer_to_equilibrium_equals_linen():
    linen, variables, model = _twins(latent="error")
    params = variables["params"]
    inference = fpc.Inference(optax.sgd(0.3), 200, tolerance=1e-4)
    expected = fpc.infer_to_equilibrium(
        linen.apply, params, fpc.init_nodes(linen.apply, params, X), X, Y, inference=inference
    )
    fpc.nnx.init_nodes(model, X)
    result = fpc.nnx.infer_to_equilibrium(model, X, Y, inference=inference)
    assert bool(result.converged) and int(result.steps) == int(expected.steps)
    np.testing.assert_allclose(result.energy.total, expected.energy.total, rtol=RTOL)
    assert model.nodes is not None
    np.testing.assert_allclose(
        _latent(model.nodes[1])[...], expected.nodes["PCNode_1"]["error"], rtol=RTOL, atol=1e-7
    )


def test_batch_norm_running_averages_equal_linen():
    linen, variables, model = _twins(batch_norm=True)
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=variables["params"], tx=optax.adam(1e-2),
        model_state={"batch_stats": variables["batch_stats"]}, **PC,
    )  # fmt: skip
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    step, traces = _nnx_step(**PC)
    for i in range(3):
        x = X * (1 + 0.2 * i) + i
        state, expected = jax.jit(lambda s, x: s.train_step(x, Y))(state, x)
        metrics = step(model, optimizer, x, Y)
        np.testing.assert_allclose(metrics["energy"], expected["energy"], rtol=RTOL)
    params, stats = _as_linen(model)
    assert_trees_close(params, state.params, rtol=RTOL, atol=1e-7)
    assert_trees_close(stats, state.model_state["batch_stats"], rtol=RTOL, atol=1e-7)
    assert len(traces) == 1

    # Evaluation: model.eval() normalises with the running averages, as linen's train=False.
    model.eval()
    evaluated = jnp.asarray(
        LinenNet(batch_norm=True, train=False).apply(
            {"params": state.params, **state.model_state}, X[:5]
        )
    )
    np.testing.assert_allclose(model(X[:5]), evaluated, rtol=RTOL, atol=1e-6)


def test_dropout_one_mask_per_step_and_a_new_one_next_step():
    model = NNXNet(rngs=nnx.Rngs(0), dropout=0.3)
    model.train()
    # A zero learning rate: the weights stay, so two steps differ only by their masks.
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    step, traces = _nnx_step(inference=fpc.Inference(optax.sgd(0.02), 10))
    first, second = step(model, optimizer, X, Y), step(model, optimizer, X, Y)
    for metrics in (first, second):
        energy = np.asarray(metrics["energy"])
        assert np.all(np.diff(energy) <= 1e-6), energy  # one energy descended
        # The initialisation and the feed-forward pass drew the same mask.
        np.testing.assert_allclose(energy[0], metrics["loss"], rtol=RTOL)
    assert abs(float(first["loss"]) - float(second["loss"])) > 1e-4  # a new mask
    # The layer is called once per hidden layer: one feed-forward pass's draws per step.
    assert model.dropout is not None and model.dropout.rngs is not None
    assert int(model.dropout.rngs.count[...]) == 2 * 2
    assert len(traces) == 1
    model.eval()
    np.testing.assert_array_equal(model(X), model(X))


def test_plain_call_at_another_batch_size():
    linen, variables, model = _twins()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    step, _ = _nnx_step(**PC)
    step(model, optimizer, X, Y)
    fpc.nnx.init_nodes(model, X)  # nodes of a batch of 12 do not change the plain call
    params, _ = _as_linen(model)
    np.testing.assert_allclose(
        model(X[:5]), jnp.asarray(linen.apply({"params": params}, X[:5])), rtol=RTOL, atol=1e-7
    )
    assert model(X[:1]).shape == (1, 3)


def test_train_step_leaves_the_nodes_and_compiles_once():
    _, _, model = _twins()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    step, traces = _nnx_step(**PC)
    for _ in range(3):
        step(model, optimizer, X, Y)
    assert model.nodes is not None
    assert _latent(model.nodes[0]).get_value() is None
    assert len(traces) == 1
    fpc.nnx.init_nodes(model, X)
    step(model, optimizer, X, Y)  # nodes held by the model are left as they are
    assert _latent(model.nodes[0])[...].shape == (12, 8)


def test_value_init_normal_draws_from_the_rngs_given():
    model = NNXNet(rngs=nnx.Rngs(0), value_init="normal", value_init_stddev=2.0)
    nodes = fpc.nnx.init_nodes(model, X, rngs=nnx.Rngs(pc_noise=3))
    first = np.asarray(nodes["nodes"][0]["value"][...])
    nodes = fpc.nnx.init_nodes(model, X, rngs=nnx.Rngs(pc_noise=3))
    again = np.asarray(nodes["nodes"][0]["value"][...])
    np.testing.assert_array_equal(first, again)
    assert abs(float(np.std(first)) - 2.0) < 0.3
    assert model.nodes is not None
    second = _latent(model.nodes[1])[...]
    assert not np.allclose(first, second)  # each node its own key
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    rngs = nnx.Rngs(7)  # the default stream feeds pc_noise
    traces = []

    @nnx.jit
    def step(model, optimizer, rngs):
        traces.append(None)
        return fpc.nnx.train_step(model, optimizer, X, Y, rngs=rngs, **PC)

    energies = [float(step(model, optimizer, rngs)["energy"][0]) for _ in range(2)]
    assert energies[0] != energies[1]  # a new draw per step
    assert len(traces) == 1


def test_mupc_scaled_linear_equals_scaled_dense():
    scales = fpc.mupc_scalings(input_features=4, width=8, depth=3)
    dense = fpc.ScaledDense(8, scale=scales.hidden, use_bias=True)
    params = dense.init(jax.random.key(0), X)["params"]
    layer = fpc.nnx.ScaledLinear(4, 8, scale=scales.hidden, use_bias=True, rngs=nnx.Rngs(0))
    assert layer.kernel[...].shape == (4, 8) and abs(float(layer.kernel[...].std()) - 1) < 0.3
    bias = jnp.asarray(params["bias"]) + 1.0
    nnx.update(layer, {"kernel": params["kernel"], "bias": bias})
    np.testing.assert_allclose(
        layer(jnp.asarray(X)),
        jnp.asarray(dense.apply({"params": {**params, "bias": bias}}, X)),
        rtol=RTOL,
    )
    assert fpc.nnx.ScaledLinear(4, 8, rngs=nnx.Rngs(0)).bias is None  # μPC: no bias


class LinenResidual(nn.Module):
    """μPC with ePC nodes: jpc's residual network, as in the 'Deep networks' tutorial."""

    @nn.compact
    def __call__(self, x):
        scale = fpc.mupc_scalings(x.shape[-1], 8, 4)
        x = fpc.PCNode(latent="error")(fpc.ScaledDense(8, scale.input)(x))
        for _ in range(2):
            x = fpc.PCNode(latent="error")(x + fpc.ScaledDense(8, scale.hidden)(nn.relu(x)))
        return fpc.ScaledDense(3, scale.output)(nn.relu(x))


class NNXResidual(nnx.Module):
    def __init__(self, rngs):
        scale = fpc.mupc_scalings(4, 8, 4)
        self.first = fpc.nnx.ScaledLinear(4, 8, scale=scale.input, rngs=rngs)
        self.blocks = nnx.List(
            [fpc.nnx.ScaledLinear(8, 8, scale=scale.hidden, rngs=rngs) for _ in range(2)]
        )
        self.nodes = nnx.List([fpc.nnx.PCNode(latent="error") for _ in range(3)])
        self.out = fpc.nnx.ScaledLinear(8, 3, scale=scale.output, rngs=rngs)

    def __call__(self, x):
        x = self.nodes[0](self.first(x))
        for block, node in zip(self.blocks, self.nodes[1:]):
            x = node(x + block(nnx.relu(x)))
        return self.out(nnx.relu(x))


def test_mupc_residual_network_with_epc_trains_as_in_linen():
    linen = LinenResidual()
    params = linen.init(jax.random.key(0), X)["params"]
    model = NNXResidual(nnx.Rngs(1))
    blocks = {i: {"kernel": params[f"ScaledDense_{i + 1}"]["kernel"]} for i in range(2)}
    nnx.update(
        model,
        {
            "first": {"kernel": params["ScaledDense_0"]["kernel"]},
            "blocks": blocks,
            "out": {"kernel": params["ScaledDense_3"]["kernel"]},
        },
    )
    options: dict[str, Any] = dict(inference=fpc.Inference(optax.sgd(0.5), 5))
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=params, tx=optax.adam(1e-2), **options
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    state, expected, metrics = _side_by_side(state, model, optimizer, options)
    np.testing.assert_allclose(
        fpc.diagnostics.energy_ratio(metrics["node_energies"]),
        fpc.diagnostics.energy_ratio(expected["node_energies"]),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        model.out.kernel[...],
        jnp.asarray(state.params["ScaledDense_3"]["kernel"]),
        rtol=RTOL,
        atol=1e-7,
    )


class LinenDropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.Dropout(0.3, deterministic=False)(nn.tanh(nn.Dense(8)(x))))
        return nn.Dense(3)(x)


def test_a_linen_model_wrapped_by_to_nnx_trains_as_in_linen():
    linen = LinenNet(batch_norm=True)
    variables = linen.init(jax.random.key(2), X)
    model = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(0))
    model.lazy_init(X)
    nnx.update(model, variables["params"], variables["batch_stats"])
    state = fpc.PCTrainState.create(
        apply_fn=linen.apply, params=variables["params"], tx=optax.adam(1e-2),
        model_state={"batch_stats": variables["batch_stats"]}, **PC,
    )  # fmt: skip
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    state, _, metrics = _side_by_side(state, model, optimizer, PC)
    assert set(metrics["node_energies"]) == {"PCNode_0", "PCNode_1"}
    assert_trees_close(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), state.params, rtol=RTOL, atol=1e-7
    )
    assert_trees_close(
        nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)),
        state.model_state["batch_stats"],
        rtol=RTOL,
        atol=1e-7,
    )
    with pytest.raises(TypeError, match="ToNNX"):
        fpc.nnx.init_nodes(model, X)


def test_a_to_nnx_model_draws_one_dropout_mask_per_step_from_its_rngs():
    linen = LinenDropoutNet()
    model = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(params=0, dropout=1))
    model.lazy_init(X)
    nnx.pop(model, fpc.nnx.NodeValue)  # the nodes lazy_init made: the plain call at any size
    assert model(X[:5]).shape == (5, 3)
    rngs = model.to_nnx__rngs
    assert rngs is not None
    count = int(rngs.dropout.count[...])
    optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
    step, _ = _nnx_step(inference=fpc.Inference(optax.sgd(0.02), 8))
    first, second = step(model, optimizer, X, Y), step(model, optimizer, X, Y)
    for metrics in (first, second):
        energy = np.asarray(metrics["energy"])
        assert np.all(np.diff(energy) <= 1e-6)
        np.testing.assert_allclose(metrics["energy"][0], metrics["loss"], rtol=RTOL)
    assert abs(float(first["loss"]) - float(second["loss"])) > 1e-4
    assert int(rngs.dropout.count[...]) == count + 2


def test_nnx_sequential_with_a_node():
    model = nnx.Sequential(
        nnx.Linear(4, 8, rngs=nnx.Rngs(0)),
        nnx.tanh,
        fpc.nnx.PCNode(),
        nnx.Linear(8, 3, rngs=nnx.Rngs(1)),
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    step, _ = _nnx_step(**PC)
    losses = [float(step(model, optimizer, X, Y)["loss"]) for _ in range(20)]
    assert losses[-1] < losses[0]


class Block(nnx.Module):
    def __init__(self, rngs, **node_options):
        self.linear = nnx.Linear(8, 8, rngs=rngs)
        self.node = fpc.nnx.PCNode(**node_options)

    def __call__(self, x):
        return self.node(jnp.tanh(self.linear(x)))


class Stacked(nnx.Module):
    """Three ``Block``s stacked by ``nnx.vmap`` and run by ``nnx.scan``."""

    def __init__(self, rngs, **node_options):
        self.first = nnx.Linear(4, 8, rngs=rngs)

        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return Block(rngs, **node_options)

        self.blocks = blocks(rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.out(body(self.first(x), self.blocks))


class Unstacked(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(4, 8, rngs=rngs)
        self.blocks = nnx.List([Block(rngs) for _ in range(3)])
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = self.first(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


def test_nodes_in_layers_stacked_by_nnx_scan_train_as_unstacked_ones():
    stacked, unstacked = Stacked(nnx.Rngs(0)), Unstacked(nnx.Rngs(1))
    params = nnx.to_pure_dict(nnx.state(stacked, nnx.Param))
    layers = params["blocks"]["linear"]
    nnx.update(
        unstacked,
        {
            "first": params["first"],
            "out": params["out"],
            "blocks": {
                i: {"linear": jax.tree_util.tree_map(lambda a, i=i: a[i], layers)} for i in range(3)
            },
        },
    )
    step, _ = _nnx_step(**PC)
    optimizers = [nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param) for m in (stacked, unstacked)]
    for _ in range(3):
        got = step(stacked, optimizers[0], X, Y)
        expected = step(unstacked, optimizers[1], X, Y)
        np.testing.assert_allclose(got["energy"], expected["energy"], rtol=RTOL)
        # The stacked node's energy [L, B] is summed over the stack.
        np.testing.assert_allclose(
            got["node_energies"]["blocks/node"],
            sum(expected["node_energies"].values()),
            rtol=RTOL,
        )
    np.testing.assert_allclose(stacked.out.kernel[...], unstacked.out.kernel[...], rtol=RTOL)
    fpc.nnx.init_nodes(stacked, X)
    assert _latent(stacked.blocks.node)[...].shape == (3, 12, 8)


def test_value_init_normal_draws_a_value_per_layer_of_a_stack():
    model = Stacked(nnx.Rngs(0), value_init="normal")
    nodes = fpc.nnx.init_nodes(model, X, rngs=jax.random.key(0))
    value = np.asarray(nodes["blocks"]["node"]["value"][...])
    assert value.shape == (3, 12, 8)
    assert not np.allclose(value[0], value[1]) and not np.allclose(value[1], value[2])


# Bad input: one clear error each.


def test_a_model_without_nodes_is_an_error_except_for_backprop():
    model = NNXNet(rngs=nnx.Rngs(0), nodes=False)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    with pytest.raises(ValueError, match="no fpc.nnx.PCNode"):
        fpc.nnx.train_step(model, optimizer, X, Y, **PC)
    with pytest.raises(ValueError, match="no fpc.nnx.PCNode"):
        fpc.nnx.init_nodes(model, X)
    metrics = fpc.nnx.train_step(model, optimizer, X, Y, algorithm="bp")
    assert metrics["node_energies"] == {}


def test_targets_of_the_wrong_shape():
    _, _, model = _twins()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    with pytest.raises(ValueError, match=r"targets have shape \(12, 4\).*\(12, 3\)"):
        fpc.nnx.train_step(model, optimizer, X, np.zeros((12, 4), np.float32), **PC)
    with pytest.raises(ValueError, match="one_hot"):
        fpc.nnx.train_step(model, optimizer, X, np.arange(12) % 3, **PC)


def test_missing_randomness():
    model = NNXNet(rngs=nnx.Rngs(0), value_init="normal")
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    with pytest.raises(ValueError, match="value_init='normal'.*'pc_noise'.*rngs="):
        fpc.nnx.train_step(model, optimizer, X, Y, **PC)
    with pytest.raises(ValueError, match="no 'pc_noise' stream and no default"):
        fpc.nnx.train_step(model, optimizer, X, Y, rngs=nnx.Rngs(params=0), **PC)
    with pytest.raises(TypeError, match="rngs must be"):
        fpc.nnx.train_step(model, optimizer, X, Y, rngs=0, **PC)  # pyright: ignore[reportArgumentType]
    # A dropout layer made without rngs: NNX's own error says so.
    model = NNXNet(rngs=nnx.Rngs(0))
    model.dropout = nnx.data(nnx.Dropout(0.5))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    with pytest.raises(ValueError, match="no `rngs` argument was provided to Dropout"):
        fpc.nnx.train_step(model, optimizer, X, Y, **PC)


def test_wrong_arguments():
    linen, variables, model = _twins()
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    with pytest.raises(TypeError, match="takes a Flax NNX model"):
        fpc.nnx.train_step(linen, optimizer, X, Y, **PC)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="must be an nnx.Optimizer"):
        fpc.nnx.train_step(model, optax.adam(1e-2), X, Y, **PC)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="takes no nudging"):
        fpc.nnx.train_step(model, optimizer, X, Y, **PC, algorithm="bp", nudging=0.5)
    with pytest.raises(ValueError, match="inference="):
        fpc.nnx.train_step(model, optimizer, X, Y)
    with pytest.raises(ValueError, match="latent must be"):
        fpc.nnx.PCNode(latent="values")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value_init must be"):
        fpc.nnx.PCNode(value_init="random")  # type: ignore[arg-type]


def test_energy_needs_the_nodes_of_this_batch():
    _, _, model = _twins()
    with pytest.raises(ValueError, match="no value for the batch.*init_nodes"):
        fpc.nnx.energy(model, X, Y)
    fpc.nnx.init_nodes(model, X)
    with pytest.raises(ValueError, match=r"stored value has shape \(12, 8\).*\(5, 8\)"):
        fpc.nnx.energy(model, X[:5], Y[:5])
