"""Models as Flax's examples write them: recurrent PC, lost nodes, pytrees, rising energy, rng."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import real_models
from flax import linen as nn
from flax import traverse_util
from helpers import assert_trees_close, train_losses

import flax_pc as fpc
from flax_pc._src import step_metrics

# --- The recurrent recipe: a node per time step under nn.RNN --------------------------

SEQUENCE, FEATURES, HIDDEN = 6, 3, 16


def _sequences(n, seed):
    """A sequence task: the class is the channel with the largest sum over time."""
    x = np.random.default_rng(seed).standard_normal((n, SEQUENCE, FEATURES)).astype(np.float32)
    labels = np.argmax(x.sum(axis=1), axis=-1)
    return x, np.eye(3, dtype=np.float32)[labels], labels


class UnrolledPCLSTM(nn.Module):
    """``LSTMClassifier(pc=True)`` with its time loop written out: one node per step by hand."""

    @nn.compact
    def __call__(self, x):
        lstm = nn.LSTMCell(HIDDEN, name="lstm", parent=None)
        cell = _Steps(lstm, name="cell")
        return nn.Dense(3, name="head")(cell(x)[:, -1])


class _Steps(nn.Module):
    lstm: nn.Module

    @nn.compact
    def __call__(self, x):
        carry = self.lstm.initialize_carry(jax.random.key(0), x[:, 0].shape)
        outputs = []
        for t in range(x.shape[1]):
            (c, h), _ = self.lstm(carry, x[:, t])
            h = fpc.PCNode(name=f"hidden_{t}")(h)
            carry = (c, h)
            outputs.append(h)
        return jnp.stack(outputs, axis=1)


def test_rnn_nodes_per_time_step_equal_the_unrolled_loop():
    x, y, _ = _sequences(4, seed=0)
    model, twin = real_models.LSTMClassifier(hidden=HIDDEN), UnrolledPCLSTM()
    params = model.init(jax.random.key(1), x)["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        twin.init(jax.random.key(1), x)["params"]
    )
    nodes = fpc.init_nodes(model.apply, params, x)
    assert nodes["cell"]["hidden"]["value"].shape == (4, SEQUENCE, HIDDEN)  # [B, T, H]
    moved = jax.tree_util.tree_map(
        lambda v: v + 0.2 * jax.random.normal(jax.random.key(2), v.shape), nodes
    )
    values = moved["cell"]["hidden"]["value"]
    twin_nodes = {"cell": {f"hidden_{t}": {"value": values[:, t]} for t in range(SEQUENCE)}}
    a = fpc.energy(model.apply, params, moved, x, y)
    b = fpc.energy(twin.apply, params, twin_nodes, x, y)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-5)
    assert a.nodes["cell"]["hidden"]["energy"][0].shape == (SEQUENCE, 4)  # batch axis last
    twin_total = sum(fpc.node_energies(b.nodes).values())
    np.testing.assert_allclose(fpc.node_energies(a.nodes)["cell/hidden"], twin_total, rtol=1e-5)


@pytest.mark.slow
def test_an_lstm_classifier_trains_by_pc_within_reach_of_backprop():
    x, y, _ = _sequences(256, seed=0)
    x_test, _, labels_test = _sequences(512, seed=1)
    model = real_models.LSTMClassifier(hidden=HIDDEN)
    params = model.init(jax.random.key(1), x[:1])["params"]
    accuracy = {}
    for algorithm in ("pc", "bp"):
        state = fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
            inference=fpc.Inference(optax.sgd(0.1), 8), algorithm=algorithm,
            output_energy=fpc.energies.cross_entropy,
        )  # fmt: skip
        step = jax.jit(lambda s, x, y: s.train_step(x, y))
        for _ in range(12):
            for i in range(0, 256, 32):
                state, metrics = step(state, x[i : i + 32], y[i : i + 32])
                # A small node step: inference never raises the energy.
                energy = np.asarray(metrics["energy"])
                assert np.all(np.diff(energy) <= 1e-5)
                assert not bool(metrics["energy_rose"])
        logits = jnp.asarray(model.apply({"params": state.params}, x_test))
        accuracy[algorithm] = float(np.mean(np.argmax(logits, -1) == labels_test))
    assert accuracy["bp"] > 0.8  # the task is learnable (chance: 1/3)
    assert accuracy["pc"] > accuracy["bp"] - 0.08


# --- No node lost silently ------------------------------------------------------------


class ScannedBlocks(nn.Module):
    """A stack of blocks under nn.scan with hand-written nodes, like big_vision's ViT."""

    axes: tuple = ()

    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode(name="stem")(nn.tanh(nn.Dense(6)(x)))

        def body(block, x, _):
            return block(x), None

        blocks = nn.scan(
            body, variable_axes={"params": 0, **dict(self.axes)}, split_rngs={"params": True},
            length=2,
        )  # fmt: skip
        x, _ = blocks(_Block(name="blocks"), x, None)
        return nn.Dense(3)(x)


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + fpc.PCNode(name="node")(nn.tanh(nn.Dense(6)(x)))


X = np.random.default_rng(0).standard_normal((8, 5), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]


@pytest.mark.parametrize(
    "axes, missing",
    [((), "fpc.NODES and fpc.ENERGIES"), (((fpc.NODES, 0),), "fpc.ENERGIES")],
)
def test_a_node_in_a_scan_that_drops_it_is_an_error(axes, missing):
    model = ScannedBlocks(axes=axes)
    params = model.init(jax.random.key(1), X)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.1), 2),
    )  # fmt: skip
    message = (
        f"PCNode at blocks/node is called inside nn.scan .*does not carry {missing}.*"
        r"variable_axes=\{\.\.\., fpc.NODES: axis, fpc.ENERGIES: axis\}"
    )
    with pytest.raises(ValueError, match=message):
        fpc.init_nodes(model.apply, params, X)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda s: s.train_step(X, Y))(state)


def test_a_node_in_an_rnn_or_a_vmap_that_drops_it_is_an_error():
    class Cell(nn.RNNCellBase):
        @nn.compact
        def __call__(self, carry, x):
            carry, h = nn.SimpleCell(4)(carry, x)
            return carry, fpc.PCNode()(h)

        @nn.nowrap
        def initialize_carry(self, rng, input_shape):
            return nn.SimpleCell(4, parent=None).initialize_carry(rng, input_shape)

        @property
        def num_feature_axes(self):
            return 1

    class Recurrent(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jnp.asarray(nn.RNN(Cell())(x))[:, -1])

    sequences = np.ones((2, 3, 5), np.float32)
    params = Recurrent().init(jax.random.key(0), sequences)["params"]
    with pytest.raises(ValueError, match=r"Cell_0/PCNode_0 .*nn.scan \(nn.RNN runs its cell"):
        fpc.init_nodes(Recurrent().apply, params, sequences)

    class Ensemble(nn.Module):
        @nn.compact
        def __call__(self, x):
            members = nn.vmap(
                _Block, variable_axes={"params": 0}, split_rngs={"params": True}, axis_size=2,
                # flax leaves in_axes unannotated, so pyright takes its type (int) from the default
                in_axes=None,  # pyright: ignore[reportArgumentType]
            )  # fmt: skip
            return nn.Dense(3)(jnp.mean(members(name="members")(nn.Dense(6)(x)), axis=0))

    params = Ensemble().init(jax.random.key(0), X)["params"]
    with pytest.raises(ValueError, match="members/node is called inside nn.vmap"):
        fpc.init_nodes(Ensemble().apply, params, X)


def test_remat_and_jit_keep_their_nodes():
    class Wrapped(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = fpc.PCNode(name="stem")(nn.tanh(nn.Dense(6)(x)))
            x = nn.remat(_Block)(name="remat")(x)
            x = nn.jit(_Block)(name="jit")(x)
            return nn.Dense(3)(x)

    params = Wrapped().init(jax.random.key(0), X)["params"]
    nodes = fpc.init_nodes(Wrapped().apply, params, X)
    assert set(traverse_util.flatten_dict(nodes, sep="/")) == {
        "stem/value", "remat/node/value", "jit/node/value",
    }  # fmt: skip


# --- Pytrees in and out -----------------------------------------------------------------


def _two_inputs(n=8):
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 12, (n, 3)).astype(np.int32)
    features = rng.standard_normal((n, 5)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[(tokens[:, 0] + (features[:, 0] > 0)) % 3]
    return tokens, features, targets


def _two_input_state(as_tuple, **kwargs):
    model = real_models.TwoInputClassifier(as_tuple=as_tuple)
    tokens, features, _ = _two_inputs()
    inputs = (tokens, features) if as_tuple else {"tokens": tokens, "features": features}
    params = model.init(jax.random.key(1), inputs)["params"]
    options: dict[str, Any] = dict(tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 3))
    return fpc.PCTrainState.create(
        apply_fn=fpc.with_nodes(model.apply), params=params, **options, **kwargs
    )


def test_tuple_and_dict_inputs_train_alike_with_the_true_batch_size():
    tokens, features, targets = _two_inputs()
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    as_tuple, as_tuple_metrics = step(_two_input_state(True), (tokens, features), targets)
    as_dict, as_dict_metrics = step(
        _two_input_state(False), {"tokens": tokens, "features": features}, targets
    )
    np.testing.assert_allclose(as_tuple_metrics["energy"], as_dict_metrics["energy"], rtol=1e-6)
    assert_trees_close(as_tuple.params, as_dict.params, rtol=1e-6)
    # Normalised by the 8 examples (not by the 2 arrays of the tuple): the loss is
    # the mean squared error of the feed-forward output over the batch.
    model = real_models.TwoInputClassifier(as_tuple=True)
    params = _two_input_state(True).params
    output = model.apply({"params": params}, (tokens, features))
    expected = np.mean(0.5 * np.sum((np.asarray(output) - targets) ** 2, axis=-1))
    np.testing.assert_allclose(as_tuple_metrics["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(as_tuple_metrics["energy"][0], expected, rtol=1e-5)


def test_inputs_of_different_batch_sizes_are_an_error_naming_them():
    tokens, features, targets = _two_inputs()
    state = _two_input_state(False)
    with pytest.raises(ValueError, match=r"inputs\['features'\]: 6, inputs\['tokens'\]: 8"):
        state.train_step({"tokens": tokens, "features": features[:6]}, targets)
    with pytest.raises(ValueError, match="inputs hold 8 examples .* targets hold 4"):
        state.train_step({"tokens": tokens, "features": features}, targets[:4])


def test_train_epoch_and_data_parallel_take_pytrees():
    tokens, features, targets = _two_inputs(24)
    inputs = {"tokens": tokens, "features": features}
    parallel = fpc.DataParallel.create(jax.devices()[:1])
    sharded = parallel.shard(inputs)
    assert sharded["tokens"].sharding == parallel.batch_sharding
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size", "shuffle"))
    state, metrics = epoch(
        _two_input_state(False), sharded, targets, jax.random.key(0), batch_size=8, shuffle=False
    )
    looped = _two_input_state(False)
    step = jax.jit(lambda s, x, y, key: s.train_step(x, y, rng=key))
    _, keys = fpc.epoch_batches(jax.random.key(0), 24, 8, shuffle=False)
    for i in range(3):
        batch = jax.tree_util.tree_map(lambda a, i=i: a[8 * i : 8 * (i + 1)], inputs)
        looped, _ = step(looped, batch, targets[8 * i : 8 * (i + 1)], keys[i])
    assert_trees_close(state.params, looped.params, rtol=1e-5, atol=1e-7)
    assert metrics["energy_rose"].shape == (3,)


def test_a_custom_output_energy_must_return_one_energy_per_example():
    state = _state()
    with pytest.raises(ValueError, match=r"returned shape \(8, 3\); it must return .*\[8\]"):
        _state(output_energy=lambda y, out: (y - out) ** 2).train_step(X, Y)
    del state


def _state(model=None, **kwargs):
    model = model or ScannedBlocks(axes=((fpc.NODES, 0), (fpc.ENERGIES, 0)))
    params = model.init(jax.random.key(1), X)["params"]
    options: dict[str, Any] = dict(tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 4))
    return fpc.PCTrainState.create(apply_fn=model.apply, params=params, **{**options, **kwargs})


# --- Rising energy --------------------------------------------------------------------


def test_energy_rose_says_whether_inference_raised_the_energy():
    step = jax.jit(lambda s: s.train_step(X, Y))
    small, large = fpc.Inference(optax.sgd(0.05), 4), fpc.Inference(optax.sgd(3.0), 4)
    _, calm = step(_state(inference=small))
    calm_energy = np.asarray(calm["energy"])
    assert np.all(np.diff(calm_energy) <= 0) and not bool(calm["energy_rose"])
    _, wild = step(_state(inference=large))  # far beyond the energy's curvature
    wild_energy = np.asarray(wild["energy"])
    assert np.any(np.diff(wild_energy) > 0) and bool(wild["energy_rose"])
    _, ipc = step(_state(inference=large, algorithm="ipc"))
    assert bool(ipc["energy_rose"])
    _, backprop = step(_state(algorithm="bp"))
    assert backprop["energy_rose"].dtype == jnp.bool_ and not bool(backprop["energy_rose"])


def test_energy_rose_tolerance():
    rose = step_metrics.energy_rose
    assert not bool(rose(jnp.array([2.0, 1.0, 1.0001])))  # 5e-5 of energy[0]: rounding
    assert bool(rose(jnp.array([2.0, 1.0, 1.001])))
    assert not bool(rose(jnp.array([2.0, 1.0, 0.5])))
    assert not bool(rose(jnp.array([2.0, 2.1], jnp.bfloat16)))  # within bfloat16's 6%
    assert not bool(rose(jnp.array([2.0])))  # no step


# --- rng --------------------------------------------------------------------------------


def test_an_int_seed_is_the_key_of_the_seed_folded_with_the_step():
    model = real_models.VAE()
    x = np.random.default_rng(0).random((4, 10)).astype(np.float32)
    params = model.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=fpc.with_nodes(model.apply), params=params, tx=optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.1), 2), output_energy=real_models.vae_energy,
    )  # fmt: skip
    step = jax.jit(functools.partial(type(state).train_step))
    _, with_seed = step(state, x, x, {"noise": 3})
    # step 0: jax.random.key(3) folded with 0 (tests/test_rngs.py: a new key every step)
    _, with_key = step(state, x, x, {"noise": jax.random.fold_in(jax.random.key(3), 0)})
    np.testing.assert_array_equal(with_seed["energy"], with_key["energy"])
    _, traced = jax.jit(lambda s, seed: s.train_step(x, x, rng={"noise": seed}))(state, 3)
    np.testing.assert_array_equal(traced["energy"], with_key["energy"])


@pytest.mark.parametrize("rng", [True, 1.5, "0", np.zeros((3,), np.uint32)])
def test_a_bad_rng_names_jax_random_key(rng):
    with pytest.raises(TypeError, match=r"jax.random.key\(0\)"):
        _state().train_step(X, Y, rng=rng)


def test_train_epoch_takes_an_int_seed():
    epoch = jax.jit(fpc.train_epoch, static_argnames="batch_size")
    a, _ = epoch(_state(), np.tile(X, (2, 1)), np.tile(Y, (2, 1)), 7, batch_size=8)
    key = jax.random.fold_in(jax.random.key(7), 0)  # the seed's key folded with state.step
    b, _ = epoch(_state(), np.tile(X, (2, 1)), np.tile(Y, (2, 1)), key, batch_size=8)
    assert_trees_close(a.params, b.params, rtol=0)


def test_helpers_train_losses_still_apply():
    losses, metrics = train_losses(_state(), X, Y, steps=5)
    assert losses[-1] < losses[0] and not bool(metrics["energy_rose"])
