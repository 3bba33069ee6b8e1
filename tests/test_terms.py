"""fpc.EnergyTerm: bidirectional PC's energy and gradients against the hand-written formula,
and the forward-initialisation shortcut with a term in the model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import flax_pc as fpc
from flax_pc import energies
from flax_pc._src import inference, initialization, network_energy

ALPHA_F, ALPHA_B = 0.7, 0.3
X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.random.default_rng(1).standard_normal((6, 2), np.float32)


class Bidirectional(nn.Module):
    """bPC with two hidden layers: x -> z1 -> z2 -> y forward (f), y -> z2 -> z1 -> x backward (g).

    ``F = α_f Σ_l ½‖z_l - f_l(z_{l-1})‖² + α_b Σ_l ½‖z_l - g_{l+1}(z_{l+1})‖²`` with
    ``z_0 = x`` and ``z_3 = y`` clamped; ``f_l(z) = W_l tanh(z) + b_l`` (``f_1(x) = W_1 x + b_1``)
    and ``g_l(z) = V_l tanh(z) + c_l`` (``g_3(y) = V_3 y + c_3``). The input is ``(x, y)``.
    """

    @nn.compact
    def __call__(self, batch):
        x, y = batch
        z1 = fpc.PCNode(precision=ALPHA_F)(nn.Dense(5, name="f1")(x))
        z2 = fpc.PCNode(precision=ALPHA_F)(nn.Dense(3, name="f2")(jnp.tanh(z1)))
        fpc.EnergyTerm(precision=ALPHA_B)(x, nn.Dense(4, name="g1")(jnp.tanh(z1)))
        fpc.EnergyTerm(precision=ALPHA_B)(z1, nn.Dense(5, name="g2")(jnp.tanh(z2)))
        fpc.EnergyTerm(precision=ALPHA_B)(z2, nn.Dense(3, name="g3")(y))
        return nn.Dense(2, name="f3")(jnp.tanh(z2))


def _output_energy(targets, output):
    return ALPHA_F * energies.squared_error(targets, output)


def _bidirectional():
    model = Bidirectional()
    params = model.init(jax.random.key(0), (X, Y))["params"]
    nodes = fpc.init_nodes(model.apply, params, (X, Y))
    keys = jax.random.split(jax.random.key(1), 2)
    nodes = {
        name: {"value": node["value"] + 0.5 * jax.random.normal(key, node["value"].shape)}
        for key, (name, node) in zip(keys, sorted(nodes.items()))
    }  # away from the forward initialisation: every error non-zero
    return model, params, nodes


def _hand_written(params, nodes):
    """The energies (per example) and dF/dz of the bPC network, in NumPy."""
    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params)
    z1 = np.asarray(nodes["PCNode_0"]["value"], np.float64)
    z2 = np.asarray(nodes["PCNode_1"]["value"], np.float64)
    x, y = X.astype(np.float64), Y.astype(np.float64)

    def dense(name, inputs):
        return inputs @ p[name]["kernel"] + p[name]["bias"]

    e1 = z1 - dense("f1", x)  # forward errors
    e2 = z2 - dense("f2", np.tanh(z1))
    e3 = y - dense("f3", np.tanh(z2))
    d0 = x - dense("g1", np.tanh(z1))  # backward errors
    d1 = z1 - dense("g2", np.tanh(z2))
    d2 = z2 - dense("g3", y)
    half = lambda e: 0.5 * np.sum(e**2, axis=-1)  # noqa: E731
    parts = {
        "PCNode_0": ALPHA_F * half(e1),
        "PCNode_1": ALPHA_F * half(e2),
        "EnergyTerm_0": ALPHA_B * half(d0),
        "EnergyTerm_1": ALPHA_B * half(d1),
        "EnergyTerm_2": ALPHA_B * half(d2),
        "output": ALPHA_F * half(e3),
    }
    slope1, slope2 = 1 - np.tanh(z1) ** 2, 1 - np.tanh(z2) ** 2
    grad_z1 = (
        ALPHA_F * e1
        - ALPHA_F * (e2 @ p["f2"]["kernel"].T) * slope1
        + ALPHA_B * d1
        - ALPHA_B * (d0 @ p["g1"]["kernel"].T) * slope1
    )
    grad_z2 = (
        ALPHA_F * e2
        - ALPHA_F * (e3 @ p["f3"]["kernel"].T) * slope2
        + ALPHA_B * d2
        - ALPHA_B * (d1 @ p["g2"]["kernel"].T) * slope2
    )
    grad_g1 = -ALPHA_B * np.tanh(z1).T @ d0  # dF/dV_1, the backward kernel to x
    return parts, {"PCNode_0": grad_z1, "PCNode_1": grad_z2}, grad_g1


def test_bidirectional_pc_energies_and_gradients_match_the_hand_written_formula():
    model, params, nodes = _bidirectional()
    result = fpc.energy(model.apply, params, nodes, (X, Y), Y, output_energy=_output_energy)
    parts, node_grads, grad_g1 = _hand_written(params, nodes)

    sown = fpc.node_energies(result.nodes)
    assert set(sown) == set(parts) - {"output"}
    for name, value in sown.items():
        np.testing.assert_allclose(value, parts[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(result.output, parts["output"], rtol=1e-5)
    np.testing.assert_allclose(result.per_example, sum(parts.values()), rtol=1e-5)

    def total(params, nodes):
        return fpc.energy(model.apply, params, nodes, (X, Y), Y, output_energy=_output_energy).total

    param_grads, grads = jax.grad(total, argnums=(0, 1))(params, nodes)
    for name, expected in node_grads.items():
        np.testing.assert_allclose(grads[name]["value"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(param_grads["g1"]["kernel"], grad_g1, rtol=1e-4, atol=1e-6)


def test_a_term_does_nothing_in_a_feed_forward_pass_init_or_node_initialisation():
    model, params, _ = _bidirectional()
    variables = model.init(jax.random.key(0), (X, Y))
    assert set(variables) == {"params", fpc.NODES}  # no energies recorded by init
    output = jnp.asarray(model.apply({"params": params}, (X, Y)))

    def dense(features, name, inputs):
        return jnp.asarray(nn.Dense(features).apply({"params": params[name]}, inputs))

    plain = dense(2, "f3", jnp.tanh(dense(3, "f2", jnp.tanh(dense(5, "f1", X)))))
    np.testing.assert_allclose(output, plain, rtol=1e-6)
    assert set(fpc.init_nodes(model.apply, params, (X, Y))) == {"PCNode_0", "PCNode_1"}


def test_a_term_called_twice_adds_both_energies():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            z = fpc.PCNode()(nn.Dense(3)(x))
            term = fpc.EnergyTerm()
            term(z, jnp.zeros_like(z))
            term(z, jnp.ones_like(z))
            return nn.Dense(2)(z)

    model = Twice()
    params = model.init(jax.random.key(0), X)["params"]
    nodes = fpc.init_nodes(model.apply, params, X)
    result = fpc.energy(model.apply, params, nodes, X, Y)
    z = np.asarray(nodes["PCNode_0"]["value"])
    sown = fpc.node_energies(result.nodes)
    np.testing.assert_allclose(sown["EnergyTerm_0"], 0.5 * np.sum(z**2, -1), rtol=1e-6)
    np.testing.assert_allclose(sown["EnergyTerm_0#1"], 0.5 * np.sum((z - 1) ** 2, -1), rtol=1e-6)


class Backward(nn.Module):
    """A classifier whose first node also predicts the input back: a term that is not zero
    at the forward initialisation (``x`` is not ``g(z1)``)."""

    with_term: bool = True

    @nn.compact
    def __call__(self, x):
        z1 = fpc.PCNode()(nn.tanh(nn.Dense(8)(x)))
        z2 = fpc.PCNode()(nn.tanh(nn.Dense(8)(z1)))
        if self.with_term:
            fpc.EnergyTerm(precision=0.5)(x, nn.Dense(4)(z1))
        return nn.Dense(2)(z2)


def test_from_a_forward_initialisation_the_first_step_is_exact_with_a_term():
    model = Backward()
    params = model.init(jax.random.key(0), X)["params"]
    initial = initialization.initialize(model.apply, params, X)
    assert initial.forward  # every node forward initialised, and yet:
    start = fpc.energy(model.apply, params, initial.nodes, X, Y)
    assert float(fpc.node_energies(start.nodes)["EnergyTerm_0"].sum()) > 1.0

    def run(forward_initialized):
        return inference.run_inference(
            model.apply, params, initial.nodes, X, Y, inference=fpc.Inference(optax.sgd(0.05), 4),
            output_energy=energies.squared_error, model_state=None, rng=None,
            forward_initialized=forward_initialized,
        )  # fmt: skip

    nodes, trajectory = run(True)
    reference_nodes, reference = run(False)
    np.testing.assert_allclose(trajectory.total[0], start.total, rtol=1e-6)
    np.testing.assert_allclose(trajectory.total, reference.total, rtol=1e-6)
    for name in nodes:
        np.testing.assert_allclose(nodes[name]["value"], reference_nodes[name]["value"], rtol=1e-5)


def test_train_step_with_a_term_never_raises_the_energy_and_reports_the_true_start():
    model = Backward()
    params = model.init(jax.random.key(0), X)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(0.01),
        inference=fpc.Inference(optax.sgd(0.02), 6),
    )  # fmt: skip
    _, metrics = jax.jit(lambda s: s.train_step(X, Y))(state)
    start = fpc.energy(model.apply, params, fpc.init_nodes(model.apply, params, X), X, Y)
    energy = np.asarray(metrics["energy"])
    np.testing.assert_allclose(energy[0], start.total / len(X), rtol=1e-6)
    assert energy[1] < energy[0]
    assert np.all(np.diff(energy) <= 1e-6), energy
    assert "EnergyTerm_0" in metrics["node_energies"]


def test_the_shortcut_is_kept_where_it_is_exact():
    def shortcut(model, sown_by_hand=False):
        params = model.init(jax.random.key(0), X)["params"]
        nodes = fpc.init_nodes(model.apply, params, X)
        total = network_energy.energy_of_nodes(model.apply, params, X, Y)
        return network_energy.only_node_energies(total, nodes)

    class SowsItsOwn(nn.Module):  # a user's energy, sown without EnergyTerm
        @nn.compact
        def __call__(self, x):
            z = fpc.PCNode()(nn.Dense(3)(x))
            if self.is_mutable_collection(fpc.ENERGIES):
                self.sow(fpc.ENERGIES, "prior", 0.5 * jnp.sum(z**2, -1))
            return nn.Dense(2)(z)

    assert shortcut(Backward(with_term=False))
    assert not shortcut(Backward())
    assert not shortcut(SowsItsOwn())


@pytest.mark.parametrize(
    ("term", "error", "match"),
    [
        (fpc.EnergyTerm(precision=-1.0), ValueError, "precision must be a number >= 0"),
        (fpc.EnergyTerm(precision="1"), ValueError, "precision must be a number >= 0"),  # pyright: ignore[reportArgumentType]
        (fpc.EnergyTerm(energy=1.0), TypeError, "energy must be callable"),  # pyright: ignore[reportArgumentType]
    ],
)
def test_bad_terms(term, error, match):
    with pytest.raises(error, match=match):
        term.init(jax.random.key(0), X, X)


def test_a_prediction_of_another_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"value has shape \(6, 4\) but prediction has shape"):
        fpc.EnergyTerm().init(jax.random.key(0), X, X[:, :1])
