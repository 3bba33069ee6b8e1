"""No silent wrong result (issue 25): dead-end nodes, double nodes, broadcasting energies,
exclude patterns that match nothing.

Each case on a small model written as the users' models are (big_vision's ViT returns
``(logits, extras)``, the README's quickstart MLP, the docs' recurrent recipe), asserting the
nodes by name, energies equal to the intended model's, and the text of the error or warning.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import real_models
from flax import linen as nn
from flax import traverse_util
from helpers import assert_trees_close

import flax_pc as fpc
from flax_pc._src import dead_nodes

X = np.random.default_rng(0).standard_normal((6, 4), np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
SEQUENCES = np.random.default_rng(1).standard_normal((4, 5, 2)).astype(np.float32)
SEQUENCE_LABELS = np.eye(3, dtype=np.float32)[np.arange(4) % 3]


def _state(apply_fn, params, **kwargs):
    defaults = dict(tx=optax.sgd(0.1), inference=fpc.Inference(optax.sgd(0.1), 4))
    return fpc.PCTrainState.create(apply_fn=apply_fn, params=params, **{**defaults, **kwargs})


def _node_paths(nodes):
    """``{'head/input': shape}``: where the nodes are."""
    flat = traverse_util.flatten_dict(nodes, sep="/")
    return {path.rsplit("/", 1)[0]: jnp.asarray(value).shape for path, value in flat.items()}


def _moved(nodes, seed=5):
    """Every node off its prediction, so every node's energy counts."""
    leaves, treedef = jax.tree_util.tree_flatten(nodes)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [v + 0.3 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, moved)


def _logits(targets, output):
    logits, _extras = output  # the model returns (logits, extras)
    return fpc.energies.cross_entropy(targets, logits)


# --- 1. A node on an output the energy never reads ---------------------------------------


class Probed(nn.Module):
    """big_vision's ViT, small: ``(logits, extras)``, a probe on the features in the extras."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(8, name="hidden")(x))
        h = nn.tanh(nn.Dense(8, name="features")(h))
        probe = nn.Dense(2, name="probe")(nn.relu(h))  # read by no output energy
        return nn.Dense(3, name="head")(h), {"probe": probe}


class TwinProbed(nn.Module):
    """``Probed`` with the nodes the energy can use, by hand (the same params tree);
    ``probe_node=True`` puts one on the probe's input too, a dead end."""

    probe_node: bool = False

    @nn.compact
    def __call__(self, x):
        h = fpc.PCNode(name="hidden_node")(nn.tanh(nn.Dense(8, name="hidden")(x)))
        h = fpc.PCNode(name="features_node")(nn.tanh(nn.Dense(8, name="features")(h)))
        side = nn.relu(h)
        if self.probe_node:
            side = fpc.PCNode(name="probe_node")(side)
        probe = nn.Dense(2, name="probe")(side)
        return nn.Dense(3, name="head")(h), {"probe": probe}


def _energy_of_nodes(apply_fn, params, output_energy=_logits, x=X, y=Y):
    return lambda nodes: fpc.energy(apply_fn, params, nodes, x, y, output_energy=output_energy)


def test_a_node_on_an_output_the_energy_leaves_out_is_named_with_the_fix():
    params = Probed().init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(Probed().apply)
    nodes = fpc.init_nodes(auto, params, X)
    assert _node_paths(nodes) == {
        "features/input": (6, 8),
        "head/input": (6, 8),
        "probe/input": (6, 8),  # reaches the model's output, not the energy
    }
    assert dead_nodes.dead_nodes(_energy_of_nodes(auto, params), nodes) == ["probe/input"]
    # An energy that reads the probe too uses the node.
    both = lambda y, out: _logits(y, out) + jnp.sum(out[1]["probe"] ** 2, axis=-1)  # noqa: E731
    assert dead_nodes.dead_nodes(_energy_of_nodes(auto, params, both), nodes) == []
    with pytest.warns(UserWarning) as caught:
        dead_nodes.warn_dead_nodes(_energy_of_nodes(auto, params), nodes, apply_fn=auto)
    assert str(caught[0].message) == (
        "The value node probe/input cannot change the output energy: nothing that "
        "output_energy reads depends on its value (it feeds only outputs the energy leaves "
        "out, or nothing), yet its energy pulls the nodes and weights before it towards its "
        "value and holds their training back. Fix: it was placed by fpc.with_nodes; tell it "
        "which part of the model's output the energy reads, fpc.with_nodes(model.apply, "
        "output=lambda out: out[0]) (the selection output_energy makes), and it places no "
        "node where only the rest depends on it."
    )
    with warnings.catch_warnings():  # once per apply_fn: a second trace says nothing
        warnings.simplefilter("error")
        dead_nodes.warn_dead_nodes(_energy_of_nodes(auto, params), nodes, apply_fn=auto)


def test_train_step_warns_once_about_a_dead_end_node():
    params = Probed().init(jax.random.key(1), X)["params"]
    state = _state(fpc.with_nodes(Probed().apply), params, output_energy=_logits)
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    with pytest.warns(UserWarning, match=r"^The value node probe/input cannot change") as caught:
        state, _ = step(state, X, Y)
    assert caught[0].filename == __file__  # the user's line
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(state, X[:3], Y[:3])  # a new trace (another batch size): no second warning


def test_with_nodes_told_the_output_places_no_dead_end_node_and_equals_the_intended_model():
    params = Probed().init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(Probed().apply, output=lambda out: out[0])
    nodes = fpc.init_nodes(auto, params, X)
    assert _node_paths(nodes) == {"features/input": (6, 8), "head/input": (6, 8)}
    assert dead_nodes.dead_nodes(_energy_of_nodes(auto, params), nodes) == []
    # The returned output is still the model's whole output.
    logits, extras = auto({"params": params}, X)
    assert logits.shape == (6, 3) and extras["probe"].shape == (6, 2)
    # The energy is the one of the model with the two nodes the energy can use.
    moved = _moved(nodes)
    twin_nodes = {
        "hidden_node": moved["features"]["input"],
        "features_node": moved["head"]["input"],
    }
    a = fpc.energy(auto, params, moved, X, Y, output_energy=_logits)
    b = fpc.energy(TwinProbed().apply, params, twin_nodes, X, Y, output_energy=_logits)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-6)
    assert float(jnp.sum(a.per_example - a.output)) > 0.1  # the hidden nodes' energies count
    # And so is training: the same weight steps as the intended model's.
    step = jax.jit(lambda s: s.train_step(X, Y))
    a_state, b_state = (
        _state(auto, params, output_energy=_logits),
        _state(TwinProbed().apply, params, output_energy=_logits),
    )
    for _ in range(3):
        a_state, a_metrics = step(a_state)
        b_state, b_metrics = step(b_state)
        np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-5)
    assert_trees_close(a_state.params, b_state.params, rtol=1e-5, atol=1e-6)


def test_the_dead_end_node_changes_the_weight_step():
    # Why it matters: the dead-end node's energy holds the nodes before it back.
    params = Probed().init(jax.random.key(1), X)["params"]

    def weight_step(apply_fn):
        state = _state(apply_fn, params, output_energy=_logits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dead-end node's warning, tested above
            new, _ = state.train_step(X, Y)
        return jnp.asarray(new.params["hidden"]["kernel"]) - jnp.asarray(params["hidden"]["kernel"])

    told = weight_step(fpc.with_nodes(Probed().apply, output=lambda out: out[0]))
    untold = weight_step(fpc.with_nodes(Probed().apply))
    change = float(jnp.linalg.norm(untold - told) / jnp.linalg.norm(told))
    assert change > 0.01


def test_a_hand_written_node_on_a_dead_end_is_named():
    model = TwinProbed(probe_node=True)
    params = model.init(jax.random.key(1), X)["params"]
    nodes = fpc.init_nodes(model.apply, params, X)
    assert set(nodes) == {"hidden_node", "features_node", "probe_node"}
    energy_of_nodes = _energy_of_nodes(model.apply, params)
    assert dead_nodes.dead_nodes(energy_of_nodes, nodes) == ["probe_node"]
    with pytest.warns(UserWarning) as caught:
        dead_nodes.warn_dead_nodes(energy_of_nodes, nodes, apply_fn=model.apply)
    message = str(caught[0].message)
    assert message.startswith("The value node probe_node cannot change the output energy")
    assert message.endswith(
        "Fix: remove the hand-written PCNode probe_node, or make output_energy read the "
        "output it feeds."
    )


def test_a_node_whose_value_nothing_reads_is_named():
    class Discarding(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = fpc.PCNode(name="used")(nn.tanh(nn.Dense(8)(x)))
            _ = fpc.PCNode(name="unused")(nn.tanh(nn.Dense(8)(h)))  # its value goes nowhere
            return nn.Dense(3)(h)

    params = Discarding().init(jax.random.key(1), X)["params"]
    nodes = fpc.init_nodes(Discarding().apply, params, X)
    energy_of_nodes = _energy_of_nodes(Discarding().apply, params, fpc.energies.cross_entropy)
    assert dead_nodes.dead_nodes(energy_of_nodes, nodes) == ["unused"]


class Prior(nn.Module):
    """A node whose only reader is an energy term (its prior), beside a classifier's node."""

    @nn.compact
    def __call__(self, x):
        z = fpc.PCNode(name="top")(nn.Dense(8)(x))
        fpc.EnergyTerm()(z, jnp.zeros_like(z))
        h = fpc.PCNode(name="hidden")(nn.tanh(nn.Dense(8)(x)))
        return nn.Dense(3)(h)


@pytest.mark.parametrize("case", ["transformer", "lstm", "vae", "term", "cnn"])
def test_no_node_is_called_dead_where_the_energy_reads_it(case):
    # Every node reaches the output energy: through the nodes after it, a scan over
    # time, a tuple output the energy reads whole, or an EnergyTerm.
    x, y, energy, rngs = X, Y, fpc.energies.squared_error, None
    if case == "transformer":
        net = real_models.TransformerClassifier()
        x, y = np.random.default_rng(1).standard_normal((4, 5, 6)).astype(np.float32), Y[:4]
        apply_fn = fpc.with_nodes(net.apply)
    elif case == "lstm":
        net, x, y = real_models.LSTMClassifier(), SEQUENCES, SEQUENCE_LABELS
        apply_fn = net.apply
    elif case == "vae":
        net, energy, rngs = real_models.VAE(features=4), real_models.vae_energy, {"noise": 3}
        x = y = (X > 0).astype(np.float32)
        apply_fn = fpc.with_nodes(net.apply)
    elif case == "term":
        net = Prior()
        apply_fn = net.apply
    else:
        net, x = real_models.CNN(), np.ones((6, 8, 8, 1), np.float32)
        apply_fn = fpc.with_nodes(net.apply)
    if rngs is not None:
        rngs = {"noise": jax.random.key(rngs["noise"])}
    params = net.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x)["params"]
    nodes = fpc.init_nodes(apply_fn, params, x, rng=rngs)
    assert nodes

    def energy_of_nodes(nodes):
        return fpc.energy(apply_fn, params, nodes, x, y, output_energy=energy, rng=rngs)

    assert dead_nodes.dead_nodes(energy_of_nodes, nodes) == []


# --- 2. with_nodes over hand-written nodes -----------------------------------------------


class QuickstartMLP(nn.Module):
    """The README's quickstart model, small: a PCNode after each hidden layer."""

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = fpc.PCNode()(nn.tanh(nn.Dense(16)(x)))
        return nn.Dense(3)(x)


@pytest.mark.parametrize("latent", ["value", "error"])
def test_with_nodes_over_the_quickstart_mlp_adds_no_node(latent):
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(3):
                x = fpc.PCNode(latent=latent)(nn.tanh(nn.Dense(16)(x)))
            return nn.Dense(3)(x)

    model = MLP()
    params = model.init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(model.apply)
    nodes = fpc.init_nodes(auto, params, X)
    assert _node_paths(nodes) == {f"PCNode_{i}": (6, 16) for i in range(3)}  # not 6
    assert jax.tree_util.tree_structure(nodes) == jax.tree_util.tree_structure(
        fpc.init_nodes(model.apply, params, X)
    )
    moved = _moved(nodes)
    a = fpc.energy(auto, params, moved, X, Y)
    b = fpc.energy(model.apply, params, moved, X, Y)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-6)
    step = jax.jit(lambda s: s.train_step(X, Y))
    a_state, a_metrics = step(_state(auto, params))
    b_state, b_metrics = step(_state(model.apply, params))
    np.testing.assert_allclose(a_metrics["energy"], b_metrics["energy"], rtol=1e-6)
    assert_trees_close(a_state.params, b_state.params, rtol=1e-6)


def test_with_nodes_fills_in_where_the_hand_written_nodes_leave_a_gap():
    class OneNode(nn.Module):  # a node after the first hidden layer only
        @nn.compact
        def __call__(self, x):
            h = fpc.PCNode(name="first")(nn.tanh(nn.Dense(16)(x)))
            h = nn.tanh(nn.Dense(16)(h))  # reads the node: no second node there
            return nn.Dense(3)(nn.relu(h))  # a layer between two nodes: with_nodes' node

    class Twin(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = fpc.PCNode(name="first")(nn.tanh(nn.Dense(16)(x)))
            h = fpc.PCNode(name="second")(nn.relu(nn.tanh(nn.Dense(16)(h))))
            return nn.Dense(3)(h)

    params = OneNode().init(jax.random.key(1), X)["params"]
    auto = fpc.with_nodes(OneNode().apply)
    nodes = fpc.init_nodes(auto, params, X)
    assert _node_paths(nodes) == {"first": (6, 16), "Dense_2/input": (6, 16)}
    moved = _moved(nodes)
    twin_nodes = {"first": moved["first"], "second": moved["Dense_2"]["input"]}
    a = fpc.energy(auto, params, moved, X, Y)
    b = fpc.energy(Twin().apply, params, twin_nodes, X, Y)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-6)


class RecurrentWithPreprocessing(nn.Module):
    """The recurrent recipe (a node per time step in ``nn.RNN``) after two dense layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(4, name="pre")(x))
        x = nn.tanh(nn.Dense(4, name="pre2")(x))  # its result feeds the cell's nodes only
        rnn = nn.RNN(
            real_models.PCLSTMCell(8, name="cell"), variable_axes={fpc.NODES: 1, fpc.ENERGIES: 1}
        )
        return nn.Dense(3, name="head")(jnp.asarray(rnn(x))[:, -1])


def test_the_recurrent_recipe_with_with_nodes_keeps_its_nodes_and_says_so():
    model = real_models.LSTMClassifier()  # the docs' recipe: PCNode on the hidden state
    params = model.init(jax.random.key(1), SEQUENCES)["params"]
    auto = fpc.with_nodes(model.apply)
    with pytest.warns(UserWarning) as caught:
        nodes = fpc.init_nodes(auto, params, SEQUENCES)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "with_nodes put no value node on the inputs of these layers. cell/lstm/ii, "
        "cell/lstm/hi, cell/lstm/if, cell/lstm/hf, cell/lstm/ig, cell/lstm/hg and 2 more: "
        "inside nn.scan, where with_nodes does not follow the data; the nodes there are your "
        "hand-written ones (cell/hidden), kept as written. exclude='cell/lstm/*' leaves them "
        "out, without this warning."
    )
    # The head reads the last hidden state, the node's value: no second node on it.
    assert _node_paths(nodes) == {"cell/hidden": (4, 5, 16)}
    moved = _moved(nodes)
    a = fpc.energy(auto, params, moved, SEQUENCES, SEQUENCE_LABELS)
    b = fpc.energy(model.apply, params, moved, SEQUENCES, SEQUENCE_LABELS)
    np.testing.assert_allclose(a.per_example, b.per_example, rtol=1e-6)
    # As the warning says: exclude leaves them out, without it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = fpc.with_nodes(model.apply, exclude="cell/lstm/*")
        assert _node_paths(fpc.init_nodes(quiet, params, SEQUENCES)) == _node_paths(nodes)


def test_a_layer_before_a_recurrent_block_with_nodes_gets_one():
    model = RecurrentWithPreprocessing()
    params = model.init(jax.random.key(1), SEQUENCES)["params"]
    with pytest.warns(UserWarning, match=r"your hand-written ones \(cell/hidden\)"):
        nodes = fpc.init_nodes(fpc.with_nodes(model.apply), params, SEQUENCES)
    # pre reads the data; pre2's input is an activation the cell's nodes predict from.
    assert _node_paths(nodes) == {"pre2/input": (4, 5, 4), "cell/hidden": (4, 5, 8)}


def test_the_skipped_layers_warning_still_asks_for_nodes_where_there_are_none():
    model = real_models.LSTMClassifier(pc=False)  # nn.LSTMCell: no node in the scan
    params = model.init(jax.random.key(1), SEQUENCES)["params"]
    with pytest.warns(UserWarning, match="write its fpc.PCNode modules by hand") as caught:
        fpc.init_nodes(fpc.with_nodes(model.apply), params, SEQUENCES)
    assert "hand-written ones" not in str(caught[0].message)


# --- 3. The built-in energies never broadcast --------------------------------------------


@pytest.mark.parametrize(
    "energy", [fpc.energies.squared_error, fpc.energies.cross_entropy, fpc.energies.bernoulli]
)
def test_the_built_in_energies_refuse_two_shapes(energy):
    name = energy.__name__
    with pytest.raises(ValueError) as raised:
        energy(Y, Y[0])  # example 0's logits for every example
    assert str(raised.value) == (
        f"{name}: the value (targets) has shape (6, 3) but the prediction has shape (3,); "
        "they must have one shape (an energy does not broadcast). The prediction has the "
        "shape of one example: is it output[0] of a model that returns one array (the first "
        "example's), where a model returning several outputs was meant? Pick the output by "
        "structure (logits, extras = output)."
    )
    with pytest.raises(ValueError, match=r"jax.nn.one_hot\(labels, 3\)\.$"):
        energy(np.arange(6) % 3, Y)  # integer labels
    with pytest.raises(ValueError, match=r"has shape \(6, 1\) but the prediction has shape"):
        energy(Y[:, :1], Y)  # [B, 1] against [B, C]: no hint, still an error


def test_a_lambda_that_picks_example_0_is_an_error_not_a_wrong_target():
    # The docs' idiom for (logits, extras), on a model that returns a plain array.
    model = QuickstartMLP()
    params = model.init(jax.random.key(1), X)["params"]
    state = _state(
        model.apply, params, output_energy=lambda y, out: fpc.energies.cross_entropy(y, out[0])
    )
    with pytest.raises(ValueError, match=r"^cross_entropy: .*has shape \(3,\).*output\[0\]"):
        jax.jit(lambda s: s.train_step(X, Y))(state)
    # Selected by structure, the same model fails at once too: it returns no pair.
    with pytest.raises(ValueError, match="too many values to unpack"):
        _state(model.apply, params, output_energy=_logits).train_step(X, Y)


def test_masked_energies_still_take_a_mask_of_the_features():
    mask, y = jnp.array([1.0, 0.0, 1.0]), jnp.asarray(Y)
    masked = fpc.energies.masked(fpc.energies.squared_error, mask)
    np.testing.assert_allclose(masked(y, jnp.zeros_like(y)), 0.5 * (Y * np.asarray(mask)).sum(-1))


# --- 5. An exclude pattern (or a layers= type) that matches nothing ----------------------


def test_an_exclude_pattern_that_matches_nothing_is_an_error():
    model = Probed()
    params = model.init(jax.random.key(1), X)["params"]
    with pytest.raises(ValueError) as raised:
        fpc.init_nodes(fpc.with_nodes(model.apply, exclude="prboe"), params, X)
    assert str(raised.value) == (
        "with_nodes: exclude pattern 'prboe' matches no layer of the model, so it would leave "
        "nothing out. exclude takes fnmatch patterns of module paths (a pattern that matches "
        "a module leaves out every layer inside it); the model's layers of the listed types "
        "are: hidden, features, probe, head."
    )
    # Each pattern must match: a good one does not cover a typo beside it.
    with pytest.raises(ValueError, match="exclude pattern 'haed' matches no layer"):
        fpc.init_nodes(fpc.with_nodes(model.apply, exclude=("probe", "haed")), params, X)
    # The patterns that match: one layer, and a module holding layers.
    excluded = fpc.init_nodes(fpc.with_nodes(model.apply, exclude="probe"), params, X)
    assert set(_node_paths(excluded)) == {"features/input", "head/input"}
    transformer = real_models.TransformerClassifier()
    tokens = np.ones((2, 3, 4), np.float32)
    t_params = transformer.init(jax.random.key(1), tokens)["params"]
    no_block = fpc.with_nodes(transformer.apply, exclude="block")
    assert set(_node_paths(fpc.init_nodes(no_block, t_params, tokens))) == {"head/input"}


def test_a_layers_type_the_model_never_calls_is_an_error():
    model = Probed()
    params = model.init(jax.random.key(1), X)["params"]
    with pytest.raises(ValueError) as raised:
        fpc.init_nodes(fpc.with_nodes(model.apply, layers=(nn.Dense, nn.Conv)), params, X)
    assert str(raised.value) == (
        "with_nodes: layers lists Conv, but the model calls no Conv layer (nor a subclass's), "
        "so it would place nothing there. The modules the model calls: Dense (hidden, "
        "features, probe, head)."
    )
    # The default list is linen's kernel layers, whichever of them the model uses.
    fpc.init_nodes(fpc.with_nodes(model.apply), params, X)
