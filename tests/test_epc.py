"""ePC (PCNode(latent='error')): same equilibrium as PC, errors reach every layer at once."""

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import assert_trees_close, train_losses

import flax_pc as fpc
from flax_pc._src import inference, initialization

DEPTH = 4


class Chain(nn.Module):
    """A deep chain with a node after every hidden layer."""

    latent: Literal["value", "error"] = "value"
    activation: str = "linear"

    @nn.compact
    def __call__(self, x):
        act = (lambda h: h) if self.activation == "linear" else nn.tanh
        for _ in range(DEPTH):
            x = fpc.PCNode(latent=self.latent)(act(nn.Dense(5, use_bias=False)(x)))
        return nn.Dense(2, use_bias=False)(x)


def _values(model, params, nodes, x):
    """Each node's value ``v`` (for ePC: ``mu + e``), as the nodes return it."""
    _, state = model.apply(
        {"params": params, fpc.NODES: nodes}, x,
        capture_intermediates=lambda module, _: isinstance(module, fpc.PCNode),
    )  # fmt: skip
    flat = jax.tree_util.tree_leaves(state["intermediates"])
    return flat


def test_error_nodes_store_the_error_and_start_at_zero():
    x = jax.random.normal(jax.random.key(0), (3, 4))
    model = Chain(latent="error")
    params = model.init(jax.random.key(1), x)["params"]
    initial = initialization.initialize(model.apply, params, x)
    assert initial.forward
    assert set(initial.nodes["PCNode_0"]) == {"error"}
    for node in initial.nodes.values():
        np.testing.assert_array_equal(node["error"], 0.0)
    # e = 0 gives the feed-forward network and zero hidden energies.
    y = jnp.ones((3, 2))
    result = fpc.energy(model.apply, params, initial.nodes, x, y)
    np.testing.assert_allclose(
        result.output_prediction, np.asarray(model.apply({"params": params}, x))
    )
    np.testing.assert_allclose(result.per_example, result.output, rtol=1e-6)


def test_one_step_reaches_every_layer_with_epc_but_one_layer_with_pc():
    x = jax.random.normal(jax.random.key(0), (3, 4))
    y = jax.random.normal(jax.random.key(2), (3, 2))
    energies = {}
    for latent in ("value", "error"):
        model = Chain(latent=latent, activation="tanh")
        params = model.init(jax.random.key(1), x)["params"]
        nodes = fpc.init_nodes(model.apply, params, x)
        nodes, _ = inference.run_inference(
            model.apply, params, nodes, x, y, inference=fpc.Inference(optax.sgd(0.1), 1),
            output_energy=fpc.energies.squared_error, model_state=None, rng=None,
            forward_initialized=True,
        )  # fmt: skip
        sown = fpc.energy(model.apply, params, nodes, x, y).nodes
        energies[latent] = [float(e.sum()) for e in fpc.node_energies(sown).values()]
    pc, epc = energies["value"], energies["error"]
    assert pc[-1] > 0 and all(e == 0 for e in pc[:-1])  # PC: only the last hidden node moved
    assert all(e > 1e-8 for e in epc)  # ePC: every layer has an error after one step


def test_pc_and_epc_reach_the_same_equilibrium_and_weight_gradient():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (3, 4), jnp.float64)
        y = jax.random.normal(jax.random.key(2), (3, 2), jnp.float64)
        values, gradients = {}, {}
        for latent in ("value", "error"):
            model = Chain(latent=latent)
            params = model.init(jax.random.key(1), x)["params"]
            nodes = fpc.init_nodes(model.apply, params, x)
            nodes, trajectory = jax.jit(
                lambda n, model=model, params=params: fpc.infer(
                    model.apply, params, n, x, y,
                    inference=fpc.Inference(optax.sgd(0.2), 4000, unroll=1),
                )
            )(nodes)  # fmt: skip
            values[latent] = _values(model, params, nodes, x)
            gradients[latent] = jax.grad(
                lambda p, model=model, nodes=nodes: fpc.energy(model.apply, p, nodes, x, y).total
            )(params)
            assert values[latent][0].dtype == jnp.float64
        assert_trees_close(values["error"], values["value"], rtol=1e-8, atol=1e-10)
        assert_trees_close(gradients["error"], gradients["value"], rtol=1e-7, atol=1e-10)
        assert all(np.abs(g).max() > 1e-4 for g in jax.tree.leaves(gradients["value"]))


@pytest.mark.parametrize("algorithm", ["pc", "ipc"])
def test_epc_trains_with_train_state(algorithm):
    x = jax.random.normal(jax.random.key(0), (16, 4))
    y = jax.nn.one_hot(jnp.arange(16) % 2, 2)
    model = Chain(latent="error", activation="tanh")
    params = model.init(jax.random.key(1), x)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
        inference=fpc.Inference(optax.sgd(0.1), 4), algorithm=algorithm,
    )  # fmt: skip
    losses, _ = train_losses(state, x, y, steps=40)
    assert losses[-1] < 0.7 * losses[0]


def test_bad_latent():
    with pytest.raises(ValueError, match="latent must be 'value'.*or 'error'"):
        fpc.PCNode(latent="errors").init(  # pyright: ignore[reportArgumentType]
            jax.random.key(0), jnp.ones((2, 3))
        )
