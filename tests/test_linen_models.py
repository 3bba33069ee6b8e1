"""The models Flax users write: BatchNorm, Dropout, lifted transforms, attention, bf16."""

import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import assert_trees_close, train_losses

import flax_pc as fpc
from flax_pc._src import initialization, rngs

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((8, 5), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(8) % 3]


def _create(
    model,
    x: np.ndarray | jax.Array = X,
    steps=3,
    node_lr=0.05,
    train=None,
    tx=None,
    unroll=None,
    **kwargs,
):
    variables = model.init(jax.random.key(1), x)
    apply_fn = model.apply if train is None else functools.partial(model.apply, train=train)
    return fpc.PCTrainState.create(
        apply_fn=apply_fn,
        params=variables["params"],
        tx=tx or optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(node_lr), steps, unroll=unroll),
        model_state={k: v for k, v in variables.items() if k != "params"},
        **kwargs,
    )


# --- BatchNorm ----------------------------------------------------------------


class BatchNormMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(4)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = fpc.PCNode()(nn.tanh(h))
        h = fpc.PCNode()(nn.tanh(nn.Dense(4)(h)))
        return nn.Dense(3)(h)


def test_batchnorm_running_averages_move_once_toward_the_feed_forward_batch():
    state = _create(BatchNormMLP(), train=True)
    kernel = np.asarray(state.params["Dense_0"]["kernel"])
    bias = np.asarray(state.params["Dense_0"]["bias"])
    new, _ = jax.jit(lambda s: s.train_step(X, Y))(state)
    h = np.asarray(X) @ kernel + bias  # BatchNorm's input in the feed-forward pass
    stats = new.model_state["batch_stats"]["BatchNorm_0"]
    # One momentum update (not one per inference step): 0.9 * init + 0.1 * batch.
    np.testing.assert_allclose(stats["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * h.var(0), rtol=1e-5)
    assert int(new.step) == 1


def test_batchnorm_inference_uses_batch_statistics_and_descends():
    state = _create(BatchNormMLP(), steps=20, node_lr=0.02, train=True)
    _, metrics = jax.jit(lambda s: s.train_step(X, Y))(state)
    energy = np.asarray(metrics["energy"])
    assert np.all(np.diff(energy) <= 1e-6), energy
    assert energy[-1] < 0.9 * energy[0]
    # After forward initialisation in train mode every hidden error is zero: the
    # first energy is the output loss of the train-mode (batch-statistics) pass.
    np.testing.assert_allclose(energy[0], metrics["loss"], rtol=1e-5)


def test_batchnorm_model_evaluates_with_running_averages():
    model = BatchNormMLP()
    state = _create(model, train=True)
    step = jax.jit(lambda s: s.train_step(X, Y))
    for _ in range(3):
        state, _ = step(state)
    variables = {"params": state.params, **state.model_state}
    out = np.asarray(model.apply(variables, X, train=False))
    # By hand: BatchNorm with the running averages.
    stats = state.model_state["batch_stats"]["BatchNorm_0"]
    p = {layer: {k: jnp.asarray(a) for k, a in v.items()} for layer, v in state.params.items()}
    h = X @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h = (h - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5)
    h = jnp.tanh(h * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"])
    h = jnp.tanh(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    np.testing.assert_allclose(out, h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"], rtol=1e-4)


@pytest.mark.parametrize("algorithm", ["ipc", "bp"])
def test_batchnorm_with_every_algorithm(algorithm):
    state = _create(BatchNormMLP(), train=True, algorithm=algorithm)
    new, metrics = jax.jit(lambda s: s.train_step(X, Y))(state)
    mean = new.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    dense = {name: jnp.asarray(a) for name, a in state.params["Dense_0"].items()}
    h = X @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(mean, 0.1 * h.mean(0), rtol=1e-5, atol=1e-7)
    assert np.isfinite(metrics["loss"])


def test_batchnorm_without_model_state_is_a_clear_error():
    model = BatchNormMLP()
    params = model.init(jax.random.key(1), X)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=functools.partial(model.apply, train=True), params=params,
        tx=optax.sgd(0.1), inference=fpc.Inference(optax.sgd(0.1), 2),
    )  # fmt: skip
    with pytest.raises(ValueError, match="'batch_stats'.*model_state="):
        state.train_step(X, Y)


@pytest.mark.parametrize(
    "model_state, error, match",
    [
        ([1, 2], TypeError, "dict of the model's non-param collections"),
        ({"params": {}}, ValueError, "model_state holds 'params'"),
    ],
)
def test_bad_model_state(model_state, error, match):
    with pytest.raises(error, match=match):
        fpc.PCTrainState.create(
            apply_fn=BatchNormMLP().apply, params={}, tx=optax.sgd(0.1),
            inference=fpc.Inference(optax.sgd(0.1), 1), model_state=model_state,
        )  # fmt: skip


def test_flax_pc_collections_are_left_out_of_the_model_state():
    variables = BatchNormMLP().init(jax.random.key(1), X)
    assert fpc.NODES in variables
    state = _create(BatchNormMLP(), train=True)
    assert set(state.model_state) == {"batch_stats"}


def test_train_epoch_carries_the_model_state():
    state = _create(BatchNormMLP(), train=True)
    x = jax.random.normal(jax.random.key(3), (32, 5))
    y = jax.nn.one_hot(jnp.arange(32) % 3, 3)
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size", "shuffle"))
    by_epoch, _ = epoch(state, x, y, jax.random.key(4), batch_size=8, shuffle=False)
    step = jax.jit(lambda s, xb, yb, k: s.train_step(xb, yb, rng=k))
    keys = jax.random.split(jax.random.split(jax.random.key(4))[1], 4)
    for i in range(4):
        state, _ = step(state, x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8], keys[i])
    assert_trees_close(by_epoch.model_state, state.model_state, rtol=1e-5, atol=1e-7)
    assert not np.allclose(state.model_state["batch_stats"]["BatchNorm_0"]["mean"], 0)


def test_model_state_survives_an_orbax_checkpoint(tmp_path):
    import orbax.checkpoint as ocp

    state, _ = jax.jit(lambda s: s.train_step(X, Y))(_create(BatchNormMLP(), train=True))
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(1, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
        restored = manager.restore(1, args=ocp.args.StandardRestore(_create(BatchNormMLP())))
    assert_trees_close(restored.model_state, state.model_state, rtol=0, atol=0)


# --- Dropout ------------------------------------------------------------------


class DropoutMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = fpc.PCNode()(nn.tanh(nn.Dense(16)(x)))
        h = nn.Dropout(0.3, deterministic=not train)(h)
        h = fpc.PCNode()(nn.tanh(nn.Dense(16)(h)))
        return nn.Dense(3)(h)


def _dropout_step(key, steps=3, node_lr=0.05):
    state = _create(DropoutMLP(), steps=steps, node_lr=node_lr, train=True)
    return jax.jit(lambda s, k: s.train_step(X, Y, rng=k))(state, key)


def test_dropout_keeps_one_mask_so_inference_descends():
    _, metrics = _dropout_step(jax.random.key(7), steps=30, node_lr=0.02)
    energy = np.asarray(metrics["energy"])
    assert np.all(np.diff(energy) <= 1e-6), energy
    assert energy[-1] < 0.9 * energy[0]
    # One mask for every pass: the feed-forward loss (params only) is the energy
    # at the forward initialisation, where every hidden error is zero.
    np.testing.assert_allclose(energy[0], metrics["loss"], rtol=1e-5)


def test_dropout_same_key_same_result_other_key_other_result():
    a, _ = _dropout_step(jax.random.key(7))
    b, _ = _dropout_step(jax.random.key(7))
    c, _ = _dropout_step(jax.random.key(8))
    assert_trees_close(a.params, b.params, rtol=0, atol=0)
    assert not np.allclose(a.params["Dense_0"]["kernel"], c.params["Dense_0"]["kernel"])


def test_dropout_dict_of_streams():
    key = jax.random.key(7)
    by_key, _ = _dropout_step(key)
    by_dict, _ = _dropout_step(rngs.as_rngs(key))
    assert_trees_close(by_key.params, by_dict.params, rtol=0, atol=0)
    only_dropout, _ = _dropout_step({"dropout": jax.random.key(9)})
    assert np.all(np.isfinite(only_dropout.params["Dense_0"]["kernel"]))


@pytest.mark.parametrize("algorithm", ["pc", "ipc", "bp"])
def test_missing_dropout_key_names_the_stream(algorithm):
    state = _create(DropoutMLP(), train=True, algorithm=algorithm)
    with pytest.raises(ValueError, match="RNG stream 'dropout'.*rng=key"):
        state.train_step(X, Y)
    with pytest.raises(ValueError, match="RNG stream 'dropout'"):
        state.train_step(X, Y, rng={fpc.NOISE: jax.random.key(0)})


def test_missing_custom_stream_asks_for_a_dict():
    class Noisy(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = fpc.PCNode()(nn.tanh(nn.Dense(4)(x)))
            h = h + jax.random.normal(self.make_rng("noise"), h.shape)
            return nn.Dense(3)(h)

    state = _create(Noisy())
    with pytest.raises(ValueError, match="RNG stream 'noise'.*rng=\\{'noise': key"):
        state.train_step(X, Y, rng=jax.random.key(0))
    state.train_step(X, Y, rng={"noise": jax.random.key(0)})


def test_train_epoch_gives_each_batch_its_own_dropout_key():
    state = _create(DropoutMLP(), train=True)
    x = jnp.tile(X, (4, 1))  # four identical batches
    y = jnp.tile(Y, (4, 1))
    _, metrics = fpc.train_epoch(state, x, y, jax.random.key(2), batch_size=8, shuffle=False)
    # Same data, new masks (and new weights): the losses differ batch to batch.
    assert len(set(np.round(np.asarray(metrics["loss"]), 6))) == 4


# --- Lifted transforms ----------------------------------------------------------

WIDTH, DEPTH = 6, 3
ValueInit = Literal["forward", "zeros", "normal"]


class Block(nn.Module):
    value_init: ValueInit = "forward"

    @nn.compact
    def __call__(self, x, _=None):
        h = fpc.PCNode(value_init=self.value_init)(nn.tanh(nn.Dense(WIDTH)(x)))
        return x + h, None


class Scanned(nn.Module):
    value_init: ValueInit = "forward"

    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.Dense(WIDTH)(x))
        blocks = nn.scan(
            Block,
            variable_axes={"params": 0, fpc.NODES: 0, fpc.ENERGIES: 0},
            split_rngs={"params": True},
            length=DEPTH,
        )
        x, _ = blocks(value_init=self.value_init, name="blocks")(x, None)
        return nn.Dense(3)(x)


class Unrolled(nn.Module):
    block: Callable[..., nn.Module] = Block

    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.Dense(WIDTH)(x))
        for i in range(DEPTH):
            x, _ = self.block(name=f"blocks_{i}")(x)
        return nn.Dense(3)(x)


def _unstack(params):
    """Scanned params -> the unrolled model's."""
    out = {k: v for k, v in params.items() if k != "blocks"}
    for i in range(DEPTH):
        out[f"blocks_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], params["blocks"])
    return out


def _state(model, params, **kwargs):
    return fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
        inference=fpc.Inference(optax.sgd(0.1), 4), **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", ["pc", "ipc"])
def test_scan_stack_equals_unrolled_stack(algorithm):
    scanned_params = Scanned().init(jax.random.key(1), X)["params"]
    scanned = _state(Scanned(), scanned_params, algorithm=algorithm)
    unrolled = _state(Unrolled(), _unstack(scanned_params), algorithm=algorithm)
    step = jax.jit(lambda s: s.train_step(X, Y))
    for _ in range(2):
        scanned, s_metrics = step(scanned)
        unrolled, u_metrics = step(unrolled)
        np.testing.assert_allclose(s_metrics["energy"], u_metrics["energy"], rtol=1e-5)
        stacked = s_metrics["node_energies"]["blocks/PCNode_0"]
        per_block = sum(u_metrics["node_energies"][f"blocks_{i}/PCNode_0"] for i in range(3))
        np.testing.assert_allclose(stacked, per_block, rtol=1e-5, atol=1e-7)
    assert_trees_close(_unstack(scanned.params), unrolled.params, rtol=1e-5, atol=1e-6)
    # The energy did flow into the stack: its nodes moved off their predictions.
    assert float(s_metrics["node_energies"]["blocks/PCNode_0"]) > 0


def test_scan_energy_and_forward_flag():
    params = Scanned().init(jax.random.key(1), X)["params"]
    initial = initialization.initialize(Scanned().apply, params, X)
    assert initial.forward
    assert initial.nodes["blocks"]["PCNode_0"]["value"].shape == (DEPTH, 8, WIDTH)
    # A node inside the scan that does not start at its prediction turns the
    # first-step shortcut off (it would be wrong there).
    zeros = Scanned(value_init="zeros")
    assert not initialization.initialize(zeros.apply, params, X).forward
    nodes = fpc.init_nodes(zeros.apply, params, X)
    result = fpc.energy(zeros.apply, params, nodes, X, Y)
    assert result.nodes["blocks"]["PCNode_0"]["energy"][0].shape == (DEPTH, 8)
    unrolled = Unrolled(block=functools.partial(Block, value_init="zeros"))
    reference = fpc.energy(
        unrolled.apply, _unstack(params), fpc.init_nodes(unrolled.apply, _unstack(params), X), X, Y
    )
    np.testing.assert_allclose(result.per_example, reference.per_example, rtol=1e-5)
    assert float(jnp.sum(result.per_example - result.output)) > 0


class Remat(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.Dense(WIDTH)(x))
        for i in range(DEPTH):
            x, _ = nn.remat(Block)(name=f"blocks_{i}")(x)
        return nn.Dense(3)(x)


def test_remat_equals_plain():
    params = Unrolled().init(jax.random.key(1), X)["params"]
    step = jax.jit(lambda s: s.train_step(X, Y))
    a, a_metrics = step(_state(Remat(), params))
    b, b_metrics = step(_state(Unrolled(), params))
    np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-6)
    assert_trees_close(a.params, b.params, rtol=1e-6, atol=1e-7)


class Ensemble(nn.Module):
    """``nn.vmap`` over ``size`` members: each a Dense + node; outputs averaged.

    ``energies_axis``: where the members' energies are stacked (flax_pc needs 0).
    """

    size: int = DEPTH
    energies_axis: int = 0

    @nn.compact
    def __call__(self, x):
        members = nn.vmap(
            Block,
            variable_axes={"params": 0, fpc.NODES: 0, fpc.ENERGIES: self.energies_axis},
            split_rngs={"params": True},
            in_axes=(None, None),  # pyright: ignore[reportArgumentType] (flax annotates an int)
            out_axes=0,
            axis_size=self.size,
        )
        h, _ = members(name="members")(nn.Dense(WIDTH)(x), None)
        return nn.Dense(3)(jnp.mean(h, axis=0))


class EnsembleUnrolled(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(WIDTH)(x)
        h = [Block(name=f"blocks_{i}")(x)[0] for i in range(DEPTH)]
        return nn.Dense(3)(jnp.mean(jnp.stack(h), axis=0))


def test_vmap_members_equal_unrolled_members():
    params = Ensemble().init(jax.random.key(1), X)["params"]
    unstacked = {k: v for k, v in params.items() if k != "members"}
    for i in range(DEPTH):
        unstacked[f"blocks_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], params["members"])
    step = jax.jit(lambda s: s.train_step(X, Y))
    a, a_metrics = step(_state(Ensemble(), params))
    b, b_metrics = step(_state(EnsembleUnrolled(), unstacked))
    np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-5)
    for i in range(DEPTH):
        assert_trees_close(
            jax.tree_util.tree_map(lambda v, i=i: v[i], a.params["members"]),
            b.params[f"blocks_{i}"], rtol=1e-5, atol=1e-6,
        )  # fmt: skip


def test_energies_stacked_on_any_axis_give_the_same_energy():
    # The box PCNode sows inside a transform records where the batch axis went,
    # so the members' energies may be stacked last ([B, members]), even when the
    # batch and the stack have one size (where a shape alone could not tell).
    for size, x in ((2, X), (8, X)):
        first, last = Ensemble(size=size, energies_axis=0), Ensemble(size=size, energies_axis=1)
        params = first.init(jax.random.key(1), x)["params"]
        nodes = jax.tree_util.tree_map(
            lambda v: v + 0.1, fpc.init_nodes(first.apply, params, x)
        )  # off their predictions: every member's energy counts
        a = fpc.energy(first.apply, params, nodes, x, Y)
        b = fpc.energy(last.apply, params, nodes, x, Y)
        np.testing.assert_allclose(b.per_example, a.per_example, rtol=1e-6)
        assert b.nodes["members"]["PCNode_0"]["energy"][0].shape == (size, 8)  # batch last
        by_hand = 0.5 * 0.1**2 * WIDTH * size  # each member's node is 0.1 off in every unit
        np.testing.assert_allclose(b.per_example - b.output, by_hand, rtol=1e-4)


# --- Misuse and naming -----------------------------------------------------------


def test_one_node_called_twice_is_an_error():
    class Tied(nn.Module):
        @nn.compact
        def __call__(self, x):
            node = fpc.PCNode()
            dense = nn.Dense(5)  # weight tying itself is fine
            h = node(nn.tanh(dense(x)))
            h = node(nn.tanh(dense(h)))
            return nn.Dense(3)(h)

    state = _create(Tied())
    with pytest.raises(ValueError, match="PCNode at PCNode_0 was called twice.*one PCNode per"):
        state.train_step(X, Y)


def test_pcnode_init_is_the_module_init():
    variables = fpc.PCNode().init(jax.random.key(0), X)
    np.testing.assert_array_equal(variables[fpc.NODES]["value"], X)
    assert jnp.asarray(fpc.PCNode(value_init="zeros").apply(variables, X)).shape == X.shape


# --- Already working: keep it so ---------------------------------------------


class TransformerBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(nn.LayerNorm()(x))
        x = fpc.PCNode()(x + h)
        h = nn.Dense(8)(nn.gelu(nn.Dense(16)(nn.LayerNorm()(x))))
        x = fpc.PCNode()(x + h)
        return nn.Dense(3)(jnp.mean(x, axis=1))


def test_attention_layernorm_residual_block_trains():
    x = jax.random.normal(jax.random.key(0), (8, 4, 8))
    state = _create(TransformerBlock(), x=x, steps=8, node_lr=0.02, tx=optax.adam(3e-3))
    losses, _ = train_losses(state, x, Y, steps=20)
    assert losses[-1] < 0.5 * losses[0]


def test_bfloat16_model_trains():
    class Half(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = fpc.PCNode()(nn.tanh(nn.Dense(16, dtype=jnp.bfloat16)(x)))
            return nn.Dense(3, dtype=jnp.bfloat16)(h)

    state = _create(Half(), x=X.astype(jnp.bfloat16))
    step = jax.jit(lambda s: s.train_step(X.astype(jnp.bfloat16), Y.astype(jnp.bfloat16)))
    first = None
    for _ in range(10):
        state, metrics = step(state)
        first = float(metrics["loss"]) if first is None else first
    nodes = fpc.init_nodes(state.apply_fn, state.params, X.astype(jnp.bfloat16))
    assert nodes["PCNode_0"]["value"].dtype == jnp.bfloat16
    assert first is not None and float(metrics["loss"]) < first


def test_vmap_over_seeds_equals_one_seed_at_a_time():
    model = DropoutMLP()

    def run(seed):
        params = model.init(jax.random.key(seed), X)["params"]
        state = fpc.PCTrainState.create(
            apply_fn=functools.partial(model.apply, train=True), params=params,
            tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 3),
        )  # fmt: skip
        state, metrics = state.train_step(X, Y, rng=jax.random.key(seed))
        return state.params, metrics["energy"]

    params, energies = jax.jit(jax.vmap(run))(jnp.arange(3))
    for seed in range(3):
        one_params, one_energy = jax.jit(run)(seed)
        np.testing.assert_allclose(energies[seed], one_energy, rtol=1e-5)
        assert_trees_close(
            jax.tree_util.tree_map(lambda p, s=seed: p[s], params), one_params, rtol=1e-5
        )


# --- Unrolling ------------------------------------------------------------------


@pytest.mark.parametrize("unroll", [False, 2])
def test_unroll_does_not_change_the_result(unroll):
    model = BatchNormMLP()
    step = jax.jit(lambda s: s.train_step(X, Y))
    a, a_metrics = step(_create(model, train=True, steps=5, unroll=unroll))
    b, b_metrics = step(_create(model, train=True, steps=5))
    np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-6)
    assert_trees_close(a.params, b.params, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("unroll", [0, -1, 1.5, "yes"])
def test_bad_unroll(unroll):
    with pytest.raises(ValueError, match="unroll must be"):
        _create(BatchNormMLP(), train=True, unroll=unroll)
