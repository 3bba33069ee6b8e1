"""Inference to equilibrium: the while-loop stop and the ODE solver."""

from typing import Literal

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import assert_trees_close

import flax_pc as fpc
from flax_pc._src import equilibrium, gradient_flow


class Net(nn.Module):
    """A small tanh network with three nodes."""

    @nn.compact
    def __call__(self, x):
        for width in (6, 5, 4):
            x = fpc.PCNode()(nn.tanh(nn.Dense(width)(x)))
        return nn.Dense(2)(x)


def _problem(dtype=jnp.float32):
    model = Net()
    x = jax.random.normal(jax.random.key(0), (3, 4), dtype)
    y = jax.random.normal(jax.random.key(1), (3, 2), dtype)
    params = model.init(jax.random.key(2), x)["params"]
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    return model, params, fpc.init_nodes(model.apply, params, x), x, y


def _node_gradient(model, params, nodes, x, y):
    return jax.grad(lambda n: fpc.energy(model.apply, params, n, x, y).total)(nodes)


def test_while_loop_and_ode_reach_the_equilibrium_of_many_small_sgd_steps():
    with jax.enable_x64(True):
        model, params, start, x, y = _problem(jnp.float64)
        reference, _ = jax.jit(
            lambda n: fpc.infer(
                model.apply, params, n, x, y,
                inference=fpc.Inference(optax.sgd(0.02), 20000, unroll=1),
            )
        )(start)  # fmt: skip
        assert float(equilibrium.rms(_node_gradient(model, params, reference, x, y))) < 1e-10
        stopped = jax.jit(
            lambda n: fpc.infer_to_equilibrium(
                model.apply, params, n, x, y,
                inference=fpc.Inference(optax.sgd(0.3), 5000, tolerance=1e-10),
            )
        )(start)  # fmt: skip
        flow = fpc.GradientFlow(
            stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9), t1=500.0
        )
        solved = jax.jit(
            lambda n: fpc.infer_to_equilibrium(
                model.apply, params, n, x, y, inference=fpc.Inference(flow, 5000, tolerance=1e-7)
            )
        )(start)
        for result, atol in ((stopped, 1e-9), (solved, 1e-6)):
            assert bool(result.converged)
            assert 0 < int(result.steps) < 5000
            assert_trees_close(result.nodes, reference, rtol=0, atol=atol)
            assert float(result.energy.total) < float(result.initial_energy)


def test_the_while_loop_stops_at_the_first_step_within_the_tolerance():
    model, params, start, x, y = _problem()
    tolerance = 1e-3
    result = jax.jit(
        lambda n: fpc.infer_to_equilibrium(
            model.apply, params, n, x, y,
            inference=fpc.Inference(optax.sgd(0.2), 1000, tolerance=tolerance),
        )
    )(start)  # fmt: skip
    steps = int(result.steps)
    assert steps > 1

    @jax.jit
    def infer_and_measure(n, count):  # `count` fixed steps, a traced bound: one compile
        def body(_, n):
            grads = _node_gradient(model, params, n, x, y)
            return jax.tree_util.tree_map(lambda v, g: v - 0.2 * g, n, grads)

        n = jax.lax.fori_loop(0, count, body, n)
        return n, equilibrium.rms(_node_gradient(model, params, n, x, y))

    norms = []
    for count in (steps - 1, steps):
        nodes, norm = infer_and_measure(start, count)
        norms.append(float(norm))
    assert norms[0] > tolerance >= norms[1]
    assert_trees_close(result.nodes, nodes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        result.energy.total, fpc.energy(model.apply, params, nodes, x, y).total, rtol=1e-5
    )


def test_not_converged_within_max_steps_is_reported():
    model, params, start, x, y = _problem()
    for node_tx in (optax.sgd(0.01), fpc.GradientFlow(t1=100.0)):
        inference = fpc.Inference(node_tx, 3, tolerance=1e-9)
        result = jax.jit(
            lambda n, inference=inference: fpc.infer_to_equilibrium(
                model.apply, params, n, x, y, inference=inference
            )
        )(start)
        assert int(result.steps) == 3 and not bool(result.converged)


def test_train_state_to_equilibrium():
    model, params, _, x, y = _problem()
    for node_tx in (optax.sgd(0.2), fpc.GradientFlow(t1=10.0)):
        state = fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
            inference=fpc.Inference(node_tx, 200, tolerance=1e-3),
        )  # fmt: skip
        step = jax.jit(lambda s: s.train_step(x, y))
        state, metrics = step(state)
        assert metrics["energy"].shape == (2,)
        assert metrics["energy"][1] < metrics["energy"][0]
        assert 0 < int(metrics["inference_steps"]) < 200
        losses = [float(metrics["loss"])]
        for _ in range(30):
            state, metrics = step(state)
            losses.append(float(metrics["loss"]))
        assert losses[-1] < 0.5 * losses[0]


def test_fixed_steps_report_t_and_backprop_zero():
    model, params, _, x, y = _problem()
    runs: tuple[tuple[Literal["pc", "ipc", "bp"], int], ...] = (("pc", 7), ("ipc", 7), ("bp", 0))
    for algorithm, expected in runs:
        state = fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
            inference=fpc.Inference(optax.sgd(0.1), 7), algorithm=algorithm,
        )  # fmt: skip
        _, metrics = jax.jit(lambda s: s.train_step(x, y))(state)
        assert int(metrics["inference_steps"]) == expected
        assert metrics["energy"].shape == (expected + 1,)  # before every step, and after


@pytest.mark.parametrize("tolerance", [0, -1e-3, "small", True])
def test_bad_tolerance(tolerance):
    model, params, start, x, y = _problem()
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        fpc.infer_to_equilibrium(
            model.apply, params, start, x, y,
            inference=fpc.Inference(optax.sgd(0.1), 10, tolerance=tolerance),
        )  # fmt: skip
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-3),
            inference=fpc.Inference(optax.sgd(0.1), 10, tolerance=tolerance),
        )  # fmt: skip


def test_bad_equilibrium_settings():
    model, params, start, x, y = _problem()
    with pytest.raises(ValueError, match="use steps >= 1"):
        fpc.infer_to_equilibrium(
            model.apply, params, start, x, y,
            inference=fpc.Inference(optax.sgd(0.1), 0, tolerance=1e-3),
        )  # fmt: skip
    create = dict(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    with pytest.raises(ValueError, match="'ipc' takes a weight step at every inference step"):
        fpc.PCTrainState.create(
            **create, inference=fpc.Inference(optax.sgd(0.1), 5, tolerance=1e-3), algorithm="ipc"
        )
    with pytest.raises(ValueError, match="use steps >= 1"):
        fpc.PCTrainState.create(**create, inference=fpc.Inference(fpc.GradientFlow(), 0))
    with pytest.raises(ValueError, match="t1 must be a number > 0"):
        fpc.GradientFlow(t1=0)
    with pytest.raises(TypeError, match="solver must be a diffrax solver"):
        fpc.GradientFlow(solver="heun")
    with pytest.raises(ValueError, match="ConstantStepSize.*needs dt0"):
        fpc.GradientFlow(stepsize_controller=diffrax.ConstantStepSize())


def test_gradient_flow_without_diffrax_says_how_to_install_it(monkeypatch):
    real_import = gradient_flow.importlib.import_module

    def without_diffrax(name, *args):
        if name == "diffrax":
            raise ModuleNotFoundError("No module named 'diffrax'")
        return real_import(name, *args)

    monkeypatch.setattr(gradient_flow.importlib, "import_module", without_diffrax)
    with pytest.raises(ImportError, match=r"pip install 'flax_pc\[ode\]'"):
        fpc.GradientFlow()


def test_batchnorm_dropout_model_to_equilibrium():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            x = nn.Dense(8)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = fpc.PCNode()(nn.tanh(x))
            x = nn.Dropout(0.3, deterministic=not train)(x)
            return nn.Dense(2)(x)

    model = Net()
    x = jax.random.normal(jax.random.key(0), (16, 4))
    y = jax.random.normal(jax.random.key(1), (16, 2))
    variables = model.init(jax.random.key(2), x, train=False)
    apply = lambda v, x, **kw: model.apply(v, x, train=True, **kw)  # noqa: E731
    state = fpc.PCTrainState.create(
        apply_fn=apply, params=variables["params"], tx=optax.adam(1e-2),
        inference=fpc.Inference(optax.sgd(0.2), 300, tolerance=1e-4),
        model_state={"batch_stats": variables["batch_stats"]},
    )  # fmt: skip
    step = jax.jit(lambda s, key: s.train_step(x, y, rng=key))
    new, metrics = step(state, jax.random.key(3))
    assert 0 < int(metrics["inference_steps"]) < 300
    assert metrics["energy"][1] < metrics["energy"][0]
    # The running averages moved once (from the feed-forward pass), as with a fixed T.
    before = state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    after = new.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert float(jnp.abs(after - before).max()) > 0
    # The same key gives the same result (one dropout mask per batch), another key another.
    again, _ = step(state, jax.random.key(3))
    other, _ = step(state, jax.random.key(4))
    assert_trees_close(again.params, new.params, rtol=0, atol=0)
    assert not np.allclose(other.params["Dense_1"]["kernel"], new.params["Dense_1"]["kernel"])
