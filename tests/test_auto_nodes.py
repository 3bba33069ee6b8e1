"""with_nodes: PC for a linen model written without PCNodes, nodes placed by data flow."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import real_models
from flax import linen as nn
from flax import traverse_util
from helpers import assert_trees_close, train_losses
from pc_models import MLP

import flax_pc as fpc
from flax_pc._src import data_flow

# NumPy constants: no JAX computation (and compilation) when the tests are collected.
X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(6) % 3]


def _state(apply_fn, params, **kwargs):
    defaults = dict(tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 3))
    return fpc.PCTrainState.create(apply_fn=apply_fn, params=params, **{**defaults, **kwargs})


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


def test_a_cnn_trains():
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    y = jax.nn.one_hot(jnp.arange(16) % 3, 3)
    params = real_models.CNN().init(jax.random.key(1), x)["params"]
    auto = fpc.with_nodes(real_models.CNN().apply)
    nodes = fpc.init_nodes(auto, params, x)
    shapes = {k: v["input"]["value"].shape for k, v in nodes.items()}
    assert shapes == {"Conv_1": (16, 4, 4, 8), "Dense_0": (16, 64), "Dense_1": (16, 32)}
    state = _state(auto, params, inference=fpc.Inference(optax.sgd(0.05), 8))
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
        (dict(layers=()), "a linen Module type or a non-empty tuple of them"),
        (dict(layers=(int,)), "a linen Module type or a non-empty tuple of them"),
        (dict(layers=int), "a linen Module type or a non-empty tuple of them"),
        (dict(exclude=3), "exclude must be a module-path pattern"),
        (dict(init="zeros"), "with_nodes got \\['init'\\]"),
        (dict(value_init="ones"), None),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        auto = fpc.with_nodes(MLP(with_nodes=False).apply, **kwargs)
        params = MLP(with_nodes=False).init(jax.random.key(1), X)["params"]
        fpc.init_nodes(auto, params, X)


# --- Placement by data flow ---------------------------------------------------------


def _node_paths(nodes):
    """``{'block/Dense_0/input': shape}``: where the nodes are."""
    flat = traverse_util.flatten_dict(nodes, sep="/")
    return {path.rsplit("/", 1)[0]: jnp.asarray(value).shape for path, value in flat.items()}


def _nodes(apply_fn, params, x, **kwargs):
    return _node_paths(fpc.init_nodes(apply_fn, params, x, **kwargs))


TOKENS = np.random.default_rng(1).standard_normal((4, 5, 6), np.float32)  # [B, L, F]
LABELS = np.eye(3, dtype=np.float32)[np.arange(4) % 3]


def test_transformer_block_one_node_per_activation():
    model = real_models.TransformerClassifier()
    params = model.init(jax.random.key(1), TOKENS)["params"]
    assert _nodes(fpc.with_nodes(model.apply), params, TOKENS) == {
        # LayerNorm's output, read by query, key and value: one node, not three.
        "block/MultiHeadDotProductAttention_0/query/input": (4, 5, 8),
        # The attention-weighted values, read by the output projection (2 heads x 4).
        "block/MultiHeadDotProductAttention_0/out/input": (4, 5, 2, 4),
        "block/mlp_in/input": (4, 5, 8),  # the MLP's input (LayerNorm's output)
        "block/mlp_out/input": (4, 5, 16),  # its hidden activation
        "head/input": (4, 8),  # the pooled features
    }  # and none on the embedding's input: the data


def test_transformer_equals_its_hand_written_twin():
    auto_model, twin_model = (
        real_models.TransformerClassifier(),
        real_models.TransformerClassifier(hand_written_nodes=True),
    )
    params = jax.jit(auto_model.init)(jax.random.key(1), TOKENS)["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        jax.eval_shape(twin_model.init, jax.random.key(1), TOKENS)["params"]
    )
    auto = fpc.with_nodes(auto_model.apply)
    nodes = fpc.init_nodes(auto, params, TOKENS)
    flat = traverse_util.flatten_dict(nodes, sep="/")
    keys = jax.random.split(jax.random.key(5), len(flat))
    moved = {  # every node off its prediction, so every energy counts
        path: value + 0.3 * jax.random.normal(key, value.shape)
        for (path, value), key in zip(sorted(flat.items()), keys)
    }
    twin_nodes = traverse_util.unflatten_dict(
        {
            real_models.TWIN_NODES[path.rsplit("/", 1)[0]] + "/value": value
            for path, value in moved.items()
        },
        sep="/",
    )
    energy = jax.jit(fpc.energy, static_argnums=0)
    a = energy(auto, params, traverse_util.unflatten_dict(moved, sep="/"), TOKENS, LABELS)
    b = energy(twin_model.apply, params, twin_nodes, TOKENS, LABELS)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-5)
    assert float(jnp.sum(a.per_example - a.output)) > 1.0  # the hidden nodes' energies
    step = jax.jit(lambda s: s.train_step(TOKENS, LABELS))
    inference = fpc.Inference(optax.sgd(0.1), 4)
    a_state, a_metrics = step(_state(auto, params, inference=inference))
    b_state, b_metrics = step(_state(twin_model.apply, params, inference=inference))
    np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-5)
    assert_trees_close(a_state.params, b_state.params, rtol=1e-4, atol=1e-6)


def test_a_discarded_head_call_gets_no_node_and_is_not_pulled():
    model, twin = real_models.DiscardedHead(), real_models.TwinDiscardedHead()
    params = model.init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(model.apply)
    # h is read by `side` (whose result is discarded) and by the head's used call:
    # one node, in the head's scope; none on the discarded call's input.
    assert _nodes(auto, params, X) == {"head/input": (6, 8)}
    nodes = jax.tree_util.tree_map(lambda v: v + 0.5, fpc.init_nodes(auto, params, X))
    a = fpc.energy(auto, params, nodes, X, Y)
    b = fpc.energy(twin.apply, params, {"node": nodes["head"]["input"]}, X, Y)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-6)
    # The weight step leaves `side` alone: its result never reaches the energy.
    state, _ = jax.jit(lambda s: s.train_step(X, Y))(_state(auto, params, tx=optax.sgd(0.1)))
    assert_trees_close(state.params["side"], params["side"], rtol=0)
    assert float(jnp.abs(state.params["head"]["kernel"] - params["head"]["kernel"]).max()) > 0


def test_the_data_never_gets_a_node_an_embedding_output_does():
    # The first listed layer called reads the embedding's output (a node); a
    # later one reads the data (no node): placement follows the data, not the order.
    model = real_models.TwoInputClassifier()
    inputs = {"tokens": np.arange(12).reshape(4, 3) % 12, "features": X[:4]}
    params = model.init(jax.random.key(1), inputs)["params"]
    assert _nodes(fpc.with_nodes(model.apply), params, inputs) == {
        "text/input": (4, 8),
        "joint/input": (4, 16),
        "head/input": (4, 8),
    }


def test_a_resnet_block_shares_its_input_between_conv_and_projection():
    model = real_models.ResNet()
    images = np.random.default_rng(2).standard_normal((2, 8, 8, 1)).astype(np.float32)
    variables = model.init(jax.random.key(1), images)
    state = {"batch_stats": variables["batch_stats"]}
    nodes = _nodes(fpc.with_nodes(model.apply), variables["params"], images, model_state=state)
    assert nodes == {
        "block1/Conv_0/input": (2, 8, 8, 4),  # the stem's output (conv_init reads the data)
        "block1/Conv_1/input": (2, 8, 8, 4),
        "block2/Conv_0/input": (2, 8, 8, 4),  # also read by block2/conv_proj: shared
        "block2/Conv_1/input": (2, 4, 4, 8),
        "head/input": (2, 8),
    }


def test_vae_with_a_tuple_output():
    model = real_models.VAE()
    rng = np.random.default_rng(3)  # two binary prototypes, 5% of the bits flipped
    prototypes = (rng.random((2, 10)) > 0.5).astype(np.float32)
    x = np.abs(prototypes[np.arange(8) % 2] - (rng.random((8, 10)) < 0.05)).astype(np.float32)
    params = model.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x)["params"]
    auto = fpc.with_nodes(model.apply)
    rng = {"noise": jax.random.key(3)}
    assert _nodes(auto, params, x, rng=rng) == {
        "encoder/fc2_mean/input": (8, 16),  # read by fc2_mean and fc2_logvar
        "decoder/fc1/input": (8, 4),  # the latent z
        "decoder/fc2/input": (8, 16),
    }
    state = _state(
        auto,
        params,
        output_energy=real_models.vae_energy,
        inference=fpc.Inference(optax.sgd(0.05), 3),
    )
    step = jax.jit(lambda s, key: s.train_step(x, x, rng={"noise": key}))
    losses = []
    for i in range(60):
        state, metrics = step(state, jax.random.key(i))
        losses.append(float(metrics["loss"]))  # the negative ELBO, nats
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5])
    # The custom energy got the tuple as it is; a built-in one says what to do.
    with pytest.raises(TypeError, match=r"returned a tuple of 3 arrays.*output\[0\]"):
        _state(auto, params).train_step(x, x, rng={"noise": jax.random.key(0)})


def test_layers_as_one_class_and_exclude():
    model = real_models.TransformerClassifier()
    params = model.init(jax.random.key(1), TOKENS)["params"]
    dense_only = _nodes(fpc.with_nodes(model.apply, layers=nn.Dense), params, TOKENS)
    assert set(dense_only) == {"block/mlp_in/input", "block/mlp_out/input", "head/input"}
    no_attention = _nodes(
        fpc.with_nodes(model.apply, exclude="*/MultiHeadDotProductAttention_0"), params, TOKENS
    )
    assert no_attention == dense_only
    assert set(
        _nodes(fpc.with_nodes(model.apply, exclude=("head", "block/mlp_*")), params, TOKENS)
    ) == {
        "block/MultiHeadDotProductAttention_0/query/input",
        "block/MultiHeadDotProductAttention_0/out/input",
    }


def test_names_are_stable():
    model = real_models.TransformerClassifier()
    params = model.init(jax.random.key(1), TOKENS)["params"]
    first = fpc.init_nodes(fpc.with_nodes(model.apply), params, TOKENS)
    again = fpc.init_nodes(fpc.with_nodes(model.apply), params, TOKENS[:2])
    assert jax.tree_util.tree_structure(first) == jax.tree_util.tree_structure(again)


def test_one_discovery_per_input_structure(monkeypatch):
    calls = []
    discover = data_flow.discover
    monkeypatch.setattr(data_flow, "discover", lambda *a, **k: calls.append(1) or discover(*a, **k))
    plain = MLP(with_nodes=False)
    params = plain.init(jax.random.key(1), X)["params"]
    state = _state(fpc.with_nodes(plain.apply), params)
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    state, _ = step(state, X, Y)  # init, feed-forward, energies, weight step: one trace
    state, _ = step(state, X + 1, Y)  # same structure: no new trace, no new compile
    assert len(calls) == 1
    step(state, X[:3], Y[:3])  # another batch size: a new trace
    assert len(calls) == 2


def test_wrapping_twice_is_an_error():
    plain = MLP(with_nodes=False)
    once = fpc.with_nodes(plain.apply)
    with pytest.raises(ValueError, match="already the result of fpc.with_nodes"):
        fpc.with_nodes(once)
    with pytest.raises(ValueError, match="already the result of fpc.with_nodes"):
        fpc.with_nodes(functools.partial(once, rngs=None))


class ScannedEncoder(nn.Module):
    """big_vision's ViT with scan=True: the encoder blocks under nn.scan (params only)."""

    scan_nodes: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, name="embedding")(x)
        encoder = nn.scan(
            lambda module, x, _: (module(x), None),
            variable_axes=(
                {"params": 0, fpc.NODES: 0, fpc.ENERGIES: 0} if self.scan_nodes else {"params": 0}
            ),
            split_rngs={"params": True},
            length=2,
        )
        x, _ = encoder(real_models.TransformerBlock(name="encoder"), x, None)
        return nn.Dense(3, name="head")(jnp.mean(x, axis=1))


@pytest.mark.parametrize("scan_nodes", [False, True])
def test_layers_in_a_scan_are_skipped_with_one_warning(scan_nodes):
    model = ScannedEncoder(scan_nodes=scan_nodes)
    params = jax.jit(model.init)(jax.random.key(1), TOKENS)["params"]
    auto = fpc.with_nodes(model.apply)
    reason = "does not carry fpc.NODES" if not scan_nodes else "does not follow the data"
    with pytest.warns(UserWarning, match=f"encoder/mlp_in.*inside nn.scan.*{reason}") as caught:
        nodes = fpc.init_nodes(auto, params, TOKENS)
    assert caught[0].filename == __file__  # the user's line, not JAX's
    assert _node_paths(nodes) == {"head/input": (4, 8)}  # the head's node is kept
    state, metrics = jax.jit(lambda s: s.train_step(TOKENS, LABELS))(_state(auto, params))
    assert set(metrics["node_energies"]) == {"head/input"}  # warned once: no second warning


def test_a_model_with_every_layer_in_a_scan_is_an_error():
    model = real_models.LSTMClassifier(pc=False)
    x = np.ones((4, 5, 2), np.float32)
    params = model.init(jax.random.key(1), x)["params"]
    # The head reads the last hidden state: with_nodes can keep that node.
    with pytest.warns(UserWarning, match=r"cell/ii, cell/hi.*inside nn.scan"):
        assert _nodes(fpc.with_nodes(model.apply), params, x) == {"head/input": (4, 16)}
    with pytest.raises(ValueError, match="could place no value node.*inside nn.scan"):
        fpc.init_nodes(fpc.with_nodes(model.apply, exclude="head"), params, x)


def test_a_single_layer_model_is_an_error():
    model = nn.Dense(3)
    params = model.init(jax.random.key(1), X)["params"]
    with pytest.raises(
        ValueError, match="could place no value node.*does not depend on the params"
    ):
        fpc.init_nodes(fpc.with_nodes(model.apply), params, X)
