"""``fpc.Inference``: one value for how the nodes settle, checked where it is made.

Also the keywords it replaces (flax_pc 0.2): they still work, warn once, and
train exactly as the value does.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import flax_pc as fpc


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (16, 12):
            x = fpc.PCNode()(nn.tanh(nn.Dense(width)(x)))
        return nn.Dense(3)(x)


X = jax.random.normal(jax.random.key(0), (8, 5))
Y = jax.nn.one_hot(jnp.arange(8) % 3, 3)
MODEL = MLP()
PARAMS = MODEL.init(jax.random.key(1), X)["params"]


def _state(**kwargs):
    return fpc.PCTrainState.create(
        apply_fn=MODEL.apply, params=PARAMS, tx=optax.adam(1e-2), **kwargs
    )


def _train(state, steps=3):
    step = jax.jit(lambda s: s.train_step(X, Y))
    for _ in range(steps):
        state, metrics = step(state)
    return state, metrics


def _assert_same_tree(a, b):
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_array_equal(u, v), a, b)


# -- the value's checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("sgd", 4), {}, TypeError, "node_tx must be an optax.GradientTransformation"),
        ((optax.sgd(0.1), 4.0), {}, TypeError, "steps must be a Python int"),
        ((optax.sgd(0.1), True), {}, TypeError, "steps must be a Python int"),
        ((optax.sgd(0.1), -1), {}, ValueError, "steps must be >= 0"),
        ((optax.sgd(0.1), 4), {"tolerance": 0.0}, ValueError, "tolerance must be a number > 0"),
        ((optax.sgd(0.1), 4), {"unroll": 0}, ValueError, "unroll must be None"),
        ((optax.sgd(0.1), 4), {"tolerance": 1e-3, "unroll": 2}, ValueError, "cannot be unrolled"),
        ((optax.sgd(0.1), 0), {"tolerance": 1e-3}, ValueError, "use steps >= 1"),
    ],
)
def test_a_bad_value_fails_where_it_is_made(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fpc.Inference(*args, **kwargs)


def test_the_value_is_frozen_hashable_and_says_how_it_runs():
    tx = optax.sgd(0.1)
    inference = fpc.Inference(tx, 40)
    assert inference == fpc.Inference(tx, 40) and hash(inference) == hash(fpc.Inference(tx, 40))
    with pytest.raises(AttributeError):
        inference.steps = 3  # pyright: ignore[reportAttributeAccessIssue]
    assert not inference.to_equilibrium and inference.scan_unroll == 1  # T > 32: rolled
    assert fpc.Inference(tx, 32).scan_unroll is True  # T <= 32: unrolled
    assert fpc.Inference(tx, 32, unroll=4).scan_unroll == 4
    assert fpc.Inference(tx, 9, tolerance=1).tolerance == 1.0
    assert fpc.Inference(tx, 9, tolerance=1e-3).to_equilibrium


def test_options_that_need_an_algorithm_fail_in_create():
    with pytest.raises(ValueError, match="give inference=fpc.Inference"):
        _state()
    with pytest.raises(ValueError, match="'ipc' .* no inference to equilibrium"):
        _state(inference=fpc.Inference(optax.sgd(0.1), 9, tolerance=1e-3), algorithm="ipc")
    with pytest.raises(ValueError, match="with 0 steps it would never learn"):
        _state(inference=fpc.Inference(optax.sgd(0.1), 0), algorithm="ipc")
    with pytest.raises(TypeError, match="inference must be an fpc.Inference"):
        _state(inference={"node_tx": optax.sgd(0.1), "steps": 4})


# -- one call, three algorithms -------------------------------------------------------------


ALGORITHMS = ("pc", "ipc", "bp")


def test_pc_ipc_and_bp_from_one_call_with_only_the_algorithm_changed():
    inference = fpc.Inference(optax.sgd(0.1), 4)
    states = {alg: _train(_state(inference=inference, algorithm=alg))[0] for alg in ALGORITHMS}
    assert all(state.inference is inference for state in states.values())
    for a, b in [("pc", "bp"), ("pc", "ipc")]:  # three different learners
        diff = jax.tree_util.tree_map(lambda u, v: jnp.max(jnp.abs(u - v)), states[a].params,
                                      states[b].params)  # fmt: skip
        assert max(jax.tree_util.tree_leaves(diff)) > 1e-5, (a, b)

    # bp is plain backprop of the batch-summed output energy: an optax loop by hand.
    params, tx = PARAMS, optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss(params):
        output = jnp.asarray(MODEL.apply({"params": params}, X))
        return jnp.sum(fpc.energies.squared_error(Y, output))

    @jax.jit
    def step(params, opt_state):
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(3):
        params, opt_state = step(params, opt_state)
    jax.tree_util.tree_map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
        states["bp"].params,
        params,
    )


def test_bp_needs_no_inference_and_still_refuses_nudging():
    state, metrics = _train(_state(algorithm="bp"), steps=1)
    assert state.inference is None and metrics["energy"].shape == (1,)
    with pytest.raises(ValueError, match="takes no nudging"):
        _state(algorithm="bp", nudging=0.5)


# -- the deprecated keywords --------------------------------------------------------------


def _one_deprecation(record) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(messages) == 1, messages
    return messages[0]


@pytest.mark.parametrize("algorithm", ["pc", "ipc"])
def test_the_old_keywords_train_exactly_as_the_value_and_warn_once(algorithm):
    tx = optax.sgd(0.1, momentum=0.5)
    new, new_metrics = _train(_state(inference=fpc.Inference(tx, 5), algorithm=algorithm))
    with pytest.warns(DeprecationWarning) as record:
        old = _state(node_tx=tx, inference_steps=5, algorithm=algorithm)
    message = _one_deprecation(record)
    assert "PCTrainState.create(node_tx=..., inference_steps=...)" in message
    assert "inference=fpc.Inference(node_tx, 5)" in message and "0.4" in message
    assert old.inference == fpc.Inference(tx, 5)
    old, old_metrics = _train(old)
    _assert_same_tree(new.params, old.params)
    _assert_same_tree(new_metrics, old_metrics)


def test_the_old_tolerance_and_unroll_keywords_map_to_the_value():
    tx = optax.sgd(0.1)
    with pytest.warns(DeprecationWarning, match=r"fpc.Inference\(node_tx, 30, tolerance=0.001\)"):
        state = _state(node_tx=tx, inference_steps=30, tolerance=1e-3)
    assert state.inference == fpc.Inference(tx, 30, tolerance=1e-3)
    with pytest.warns(DeprecationWarning, match=r"unroll=2\)"):
        state = _state(node_tx=tx, inference_steps=4, unroll=2)
    assert state.inference == fpc.Inference(tx, 4, unroll=2)


def test_old_and_new_together_or_half_the_old_keywords_are_errors():
    with pytest.raises(TypeError, match="give inference= alone; node_tx is part"):
        _state(inference=fpc.Inference(optax.sgd(0.1), 4), node_tx=optax.sgd(0.1))
    with pytest.raises(TypeError, match="inference_steps without node_tx"):
        _state(inference_steps=4)
    nodes = fpc.init_nodes(MODEL.apply, PARAMS, X)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_steps'"):
        fpc.infer(MODEL.apply, PARAMS, nodes, X, Y, node_tx=optax.sgd(0.1), max_steps=4)
    with pytest.raises(TypeError, match=r"fpc.infer runs inference .* give inference="):
        fpc.infer(MODEL.apply, PARAMS, nodes, X, Y)


# -- infer and infer_to_equilibrium ---------------------------------------------------------


def test_infer_takes_the_value_and_the_old_keywords_warn():
    nodes = fpc.init_nodes(MODEL.apply, PARAMS, X)
    tx = optax.sgd(0.1)
    new = fpc.infer(MODEL.apply, PARAMS, nodes, X, Y, inference=fpc.Inference(tx, 6, unroll=2))
    with pytest.warns(DeprecationWarning) as record:
        old = fpc.infer(MODEL.apply, PARAMS, nodes, X, Y, node_tx=tx, inference_steps=6, unroll=2)
    assert "fpc.infer(node_tx=..., inference_steps=..., unroll=...)" in _one_deprecation(record)
    _assert_same_tree(new, old)
    assert new[1].total.shape == (6,) and new[1].total[-1] < new[1].total[0]
    with pytest.raises(ValueError, match="call fpc.infer_to_equilibrium with it"):
        fpc.infer(MODEL.apply, PARAMS, nodes, X, Y, inference=fpc.Inference(tx, 6, tolerance=1))


def test_infer_to_equilibrium_takes_the_value_and_the_old_keywords_warn():
    nodes = fpc.init_nodes(MODEL.apply, PARAMS, X)
    tx = optax.sgd(0.2)
    inference = fpc.Inference(tx, 300, tolerance=1e-4)
    new = fpc.infer_to_equilibrium(MODEL.apply, PARAMS, nodes, X, Y, inference=inference)
    with pytest.warns(DeprecationWarning) as record:
        old = fpc.infer_to_equilibrium(
            MODEL.apply, PARAMS, nodes, X, Y, node_tx=tx, tolerance=1e-4, max_steps=300
        )
    assert "inference=fpc.Inference(node_tx, 300, tolerance=0.0001)" in _one_deprecation(record)
    _assert_same_tree(new, old)
    assert bool(new.converged) and 0 < int(new.steps) < 300
    # Without a tolerance: every step, as fpc.infer takes them.
    fixed = fpc.infer_to_equilibrium(
        MODEL.apply, PARAMS, nodes, X, Y, inference=fpc.Inference(tx, 7)
    )
    scanned, _ = fpc.infer(MODEL.apply, PARAMS, nodes, X, Y, inference=fpc.Inference(tx, 7))
    assert int(fixed.steps) == 7
    jax.tree_util.tree_map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), fixed.nodes, scanned
    )
    with pytest.raises(ValueError, match="cannot be unrolled"):
        fpc.infer_to_equilibrium(
            MODEL.apply, PARAMS, nodes, X, Y, inference=fpc.Inference(tx, 7, unroll=2)
        )


# -- NNX --------------------------------------------------------------------------------------


def _nnx_mlp():
    rngs = nnx.Rngs(0)
    return nnx.Sequential(
        nnx.Linear(5, 16, rngs=rngs), nnx.tanh, fpc.nnx.PCNode(), nnx.Linear(16, 3, rngs=rngs)
    )


@nnx.jit(static_argnames="algorithm")
def _nnx_step(model, optimizer, algorithm):
    return fpc.nnx.train_step(
        model, optimizer, X, Y, inference=fpc.Inference(optax.sgd(0.1), 4), algorithm=algorithm
    )


@nnx.jit(static_argnames="algorithm")
def _nnx_step_with_the_old_keywords(model, optimizer, algorithm):
    # Jitted as _nnx_step is: one program each, so that float rounding cannot tell them
    # apart (iPC's Adam steps turn a last-bit difference in a near-zero gradient into lr).
    keywords = {} if algorithm == "bp" else {"node_tx": optax.sgd(0.1), "inference_steps": 4}
    return fpc.nnx.train_step(model, optimizer, X, Y, **keywords, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nnx_train_step_takes_the_value_and_matches_the_old_keywords(algorithm):
    models = [_nnx_mlp() for _ in range(2)]
    optimizers = [nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param) for m in models]
    new = _nnx_step(models[0], optimizers[0], algorithm)
    context = pytest.warns(DeprecationWarning, match="fpc.nnx.train_step")
    if algorithm == "bp":  # the old keywords were refused with bp; nothing to compare
        context = warnings.catch_warnings()
    with context:  # warns as it traces
        old = _nnx_step_with_the_old_keywords(models[1], optimizers[1], algorithm)
    np.testing.assert_allclose(new["loss"], old["loss"], rtol=1e-6)
    jax.tree_util.tree_map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
        nnx.state(models[0], nnx.Param),
        nnx.state(models[1], nnx.Param),
    )


def test_nnx_infer_functions_take_the_value():
    model = _nnx_mlp()
    fpc.nnx.init_nodes(model, X)
    energies = fpc.nnx.infer(model, X, Y, inference=fpc.Inference(optax.sgd(0.1), 3))
    assert energies.total.shape == (3,)
    result = fpc.nnx.infer_to_equilibrium(
        model, X, Y, inference=fpc.Inference(optax.sgd(0.1), 200, tolerance=1e-3)
    )
    assert bool(result.converged)
    with pytest.warns(DeprecationWarning, match="fpc.nnx.infer"):
        fpc.nnx.infer(model, X, Y, node_tx=optax.sgd(0.1), inference_steps=2)


# -- the noise stream's name ---------------------------------------------------------------


def test_noise_is_the_streams_name_and_node_rng_a_deprecated_alias():
    assert fpc.NOISE == "pc_noise"
    with pytest.warns(DeprecationWarning, match="fpc.NODE_RNG is deprecated .* fpc.NOISE"):
        assert fpc.NODE_RNG == fpc.NOISE  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(AttributeError):
        fpc.NO_SUCH_NAME  # pyright: ignore[reportAttributeAccessIssue]  # noqa: B018
