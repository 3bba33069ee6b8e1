"""PCTrainState: the train step against the reference, compilation, checkpoints, training."""

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_pc as ref
from flax import linen as nn
from helpers import assert_trees_close
from pc_models import MLP

import flax_pc as fpc

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((16, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(16) % 3]


def _state(model=None, x: np.ndarray | jax.Array = X, **kwargs):
    model = model or MLP()
    params = model.init(jax.random.key(2), x)["params"]
    options: dict[str, Any] = dict(tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 4))
    options.update(kwargs)
    return fpc.PCTrainState.create(apply_fn=model.apply, params=params, **options)


def test_train_step_equals_the_reference_implementation():
    state = _state()
    weights = ref.from_flax(state.params)
    adam = optax.adam(1e-2)
    opt_state = adam.init(weights)
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    for i in range(5):
        x, y = X + 0.1 * i, jnp.roll(Y, i, axis=0)
        state, metrics = step(state, x, y)
        values, _ = ref.feed_forward(weights, x)
        energies = [ref.energy(weights, x, values, y)]
        for _ in range(4):
            values = ref.node_step(weights, x, values, y, 0.1)
            energies.append(ref.energy(weights, x, values, y))
        grads = ref.weight_gradients(weights, x, values, y)
        updates, opt_state = adam.update(grads, opt_state, weights)
        weights = optax.apply_updates(weights, updates)
        np.testing.assert_allclose(metrics["energy"], np.array(energies) / 16, rtol=1e-5)
    assert_trees_close(ref.from_flax(state.params), weights, atol=1e-5)
    assert int(state.step) == 5


def test_metrics():
    state = _state()
    _, metrics = state.train_step(X, Y)
    assert metrics["energy"].shape == (5,)
    assert set(metrics["node_energies"]) == {"PCNode_0", "PCNode_1"}
    out = state.apply_fn({"params": state.params}, X)
    np.testing.assert_allclose(
        metrics["loss"], np.mean(0.5 * np.sum((Y - out) ** 2, -1)), rtol=1e-6
    )
    np.testing.assert_allclose(metrics["loss"], metrics["energy"][0], rtol=1e-6)
    total_hidden = sum(float(v) for v in metrics["node_energies"].values())
    assert total_hidden > 0 and total_hidden < metrics["energy"][-1]


def test_train_step_compiles_once_across_batches():
    traces = []

    def train_step(state, x, y):
        traces.append(1)  # runs once per trace, not per call
        return state.train_step(x, y)

    state = _state()
    step = jax.jit(train_step)
    for i in range(4):
        state, _ = step(state, X * i, Y)
    assert len(traces) == 1


def test_model_without_nodes_is_backprop_with_one_warning():
    state = _state(
        MLP(with_nodes=False), inference=fpc.Inference(optax.sgd(0.1), 3), tx=optax.sgd(0.1)
    )
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_state, metrics = step(state, X, Y)
        step(new_state, X, Y)
    (warning,) = [w for w in caught if "plain backprop" in str(w.message)]
    assert warning.filename == __file__  # the user's line, not a file inside JAX
    assert "fpc.with_nodes" in str(warning.message)
    backprop = ref.backprop_gradients(ref.from_flax(state.params), X, Y)
    expected = jax.tree.map(lambda w, g: w - 0.1 * g, ref.from_flax(state.params), backprop)
    assert_trees_close(ref.from_flax(new_state.params), expected, atol=1e-6)
    assert metrics["energy"].shape == (4,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tx=0.1), TypeError, "tx must be an optax"),
        (dict(inference=("sgd", 4)), TypeError, "node_tx must be an optax"),
        (dict(inference=(optax.sgd(0.1), -2)), ValueError, "steps"),
        (dict(inference=(optax.sgd(0.1), 4.0)), TypeError, "steps"),
        (dict(algorithm="ep"), ValueError, "algorithm"),
        (dict(output_energy="mse"), TypeError, "output_energy"),
    ],
)
def test_create_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        options: dict[str, Any] = dict(kwargs)
        if "inference" in options:  # fpc.Inference(node_tx, steps), made in the raises block
            options["inference"] = fpc.Inference(*options["inference"])
        _state(**options)


def test_train_step_rejects_targets_of_the_wrong_shape():
    with pytest.raises(ValueError, match="one_hot"):
        _state().train_step(X, jnp.arange(16) % 3)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.relu(nn.Conv(4, (3, 3))(x)))
        x = fpc.PCNode()(nn.relu(nn.Conv(4, (3, 3), strides=2)(x)))
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_a_conv_model_trains():
    images = jax.random.normal(jax.random.key(3), (32, 8, 8, 1))
    labels = (images[:, :4].mean((1, 2, 3)) > images[:, 4:].mean((1, 2, 3))).astype(jnp.int32)
    targets = jax.nn.one_hot(labels, 2)
    state = _state(
        ConvNet(), x=images, tx=optax.adam(3e-3), inference=fpc.Inference(optax.sgd(0.05), 4)
    )
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    losses = []
    for _ in range(60):
        state, metrics = step(state, images, targets)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.3 * losses[0]
    assert metrics["energy"][-1] < metrics["energy"][0]


def test_orbax_checkpoint_round_trip(tmp_path):
    import orbax.checkpoint as ocp

    step = jax.jit(lambda s: s.train_step(X, Y))
    state, _ = step(_state())
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    fresh = _state()
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored = manager.restore(1, args=ocp.args.StandardRestore(fresh))
    assert isinstance(restored, fpc.PCTrainState)
    assert_trees_close(restored, state, rtol=0, atol=0)
    assert restored.inference is not None and restored.inference.steps == 4
    again, _ = step(restored)
    expected, _ = step(state)
    assert_trees_close(again.params, expected.params, rtol=0, atol=0)


@pytest.mark.slow
def test_digits_reaches_90_percent():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images.astype(np.float32) / 16.0, labels, test_size=0.25, random_state=0
    )
    model = MLP(features=(64, 64), outputs=10)
    state = _state(
        model, x=jnp.ones((1, 64)), tx=optax.adam(1e-3), inference=fpc.Inference(optax.sgd(0.1), 8)
    )
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    rng = np.random.default_rng(0)
    batch = 64
    for _ in range(15):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start : start + batch]
            state, _ = step(state, x_train[idx], jax.nn.one_hot(y_train[idx], 10))
    logits = np.asarray(model.apply({"params": state.params}, x_test))
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    assert accuracy >= 0.90, accuracy


class ZerosInitMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode(value_init="zeros")(nn.tanh(nn.Dense(8)(x)))
        x = fpc.PCNode()(nn.tanh(nn.Dense(8)(x)))
        return nn.Dense(3)(x)


@pytest.mark.parametrize("model", [MLP(), ZerosInitMLP()], ids=["forward", "zeros"])
def test_train_step_equals_the_pure_functions(model):
    """train_step (first-step shortcut after a forward init) = init_nodes + infer + grad."""
    state = _state(model, tx=optax.sgd(1.0))
    nodes = fpc.init_nodes(model.apply, state.params, X)
    nodes, trajectory = fpc.infer(
        model.apply, state.params, nodes, X, Y, inference=fpc.Inference(optax.sgd(0.1), 4)
    )
    grads = jax.grad(lambda p: fpc.energy(model.apply, p, nodes, X, Y).total)(state.params)
    new_state, metrics = state.train_step(X, Y)
    np.testing.assert_allclose(metrics["energy"][:-1], trajectory.total / 16, rtol=1e-6)
    step = jax.tree.map(lambda p0, p1: p0 - p1, state.params, new_state.params)  # lr = 1
    assert_trees_close(step, grads, rtol=1e-5, atol=1e-7)
