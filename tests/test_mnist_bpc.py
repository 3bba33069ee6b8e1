"""examples/mnist's bidirectional PC model (models_bpc.BPC, model='bpc') and its generation.

The energy, its node gradients and the top-down initialisation are checked
against the formula written out by hand; a tiny synthetic run of the bPC
config trains and draws its samples.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import log_lines

import flax_pc as fpc
from examples.mnist import generate, models_bpc, train

SIZES = (6, 5, 4, 3)  # image, two hidden layers, label
ALPHA_B = 0.3
BATCH = 4


def small_bpc(**overrides):
    fields = {"hidden_sizes": SIZES[1:-1], "backward_precision": ALPHA_B, "num_classes": SIZES[-1]}
    return models_bpc.BPC(image_size=SIZES[0], **{**fields, **overrides})


def small_network():
    model = small_bpc()
    keys = jax.random.split(jax.random.key(0), 5)
    image = jax.random.uniform(keys[0], (BATCH, SIZES[0]))
    label = jax.nn.one_hot(jnp.arange(BATCH) % SIZES[-1], SIZES[-1])
    params = model.init(keys[1], image, train=False)["params"]
    # Random params (the biases too), so that no term is zero by accident.
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaves = [
        jax.random.normal(k, p.shape) * 0.5
        for k, p in zip(jax.random.split(keys[2], len(leaves)), leaves)
    ]
    params = jax.tree_util.tree_unflatten(tree, leaves)
    hidden = [
        jax.random.normal(k, (BATCH, n)) for k, n in zip(jax.random.split(keys[3], 2), SIZES[1:-1])
    ]
    return model, params, image, label, hidden


def hand_energy(params, image, label, hidden):
    """F per example, written out: forward errors at precision 1, backward at ALPHA_B."""
    z = [image, *hidden, label]
    top = len(z) - 1

    def layer_input(v, layer):
        return v if layer in (0, top) else jnp.tanh(v)

    def dense(name, v):
        return v @ params[name]["kernel"] + params[name]["bias"]

    energy = 0.0
    for layer in range(1, top + 1):
        forward = dense(f"forward_{layer}", layer_input(z[layer - 1], layer - 1))
        backward = dense(f"backward_{layer}", layer_input(z[layer], layer))
        energy += 0.5 * jnp.sum((z[layer] - forward) ** 2, -1)  # the label's: the output energy
        energy += ALPHA_B * 0.5 * jnp.sum((z[layer - 1] - backward) ** 2, -1)
    return energy


def test_energy_and_node_gradients_are_the_formula():
    model, params, image, label, hidden = small_network()
    apply = lambda *a, **k: model.apply(*a, train=True, **k)  # noqa: E731
    inputs = models_bpc.with_labels(np.asarray(image), np.asarray(label))
    nodes = {f"hidden_{i + 1}": {"value": v} for i, v in enumerate(hidden)}
    result = jax.jit(lambda n: fpc.energy(apply, params, n, inputs, label))(nodes)
    expected = jax.jit(hand_energy)(params, image, label, hidden)
    np.testing.assert_allclose(result.total, jnp.sum(expected), rtol=1e-5)
    per_term = fpc.node_energies(result.nodes)
    assert set(per_term) == {"hidden_1", "hidden_2", *(f"backward_term_{i}" for i in (1, 2, 3))}

    def total(nodes):
        return fpc.energy(apply, params, nodes, inputs, label).total

    grads = jax.jit(jax.grad(total))(nodes)
    hand = jax.jit(jax.grad(lambda h: jnp.sum(hand_energy(params, image, label, h))))(hidden)
    for i in range(2):
        np.testing.assert_allclose(grads[f"hidden_{i + 1}"]["value"], hand[i], rtol=1e-4, atol=1e-5)


def test_generating_is_the_same_energy_from_a_top_down_start():
    model, params, image, label, hidden = small_network()
    generator = lambda *a, **k: model.clone(generate=True).apply(*a, train=False, **k)  # noqa: E731
    # The top-down pass: every node at its backward prediction, from the label down.
    start = fpc.init_nodes(generator, params, label)
    z = label
    for layer, name in ((3, "hidden_2"), (2, "hidden_1"), (1, "image")):
        z = (z if layer == 3 else jnp.tanh(z)) @ params[f"backward_{layer}"]["kernel"]
        z = z + params[f"backward_{layer}"]["bias"]
        np.testing.assert_allclose(start[name]["value"], z, rtol=1e-5, atol=1e-6)
    # With the image a node, the energy is still F.
    nodes = {
        "image": {"value": image},
        "hidden_1": {"value": hidden[0]},
        "hidden_2": {"value": hidden[1]},
    }
    result = fpc.energy(generator, params, nodes, label, label)
    np.testing.assert_allclose(
        result.total, jnp.sum(hand_energy(params, image, label, hidden)), rtol=1e-5
    )


def test_the_feed_forward_pass_classifies_without_the_label():
    model, params, image, label, _ = small_network()
    output = jnp.asarray(model.apply({"params": params}, image, train=False))
    h = image
    for layer in (1, 2, 3):
        h = (h if layer == 1 else jnp.tanh(h)) @ params[f"forward_{layer}"]["kernel"]
        h = h + params[f"forward_{layer}"]["bias"]
    np.testing.assert_allclose(output, h, rtol=1e-5, atol=1e-6)
    with_label = models_bpc.with_labels(np.asarray(image), np.asarray(label))
    np.testing.assert_array_equal(model.apply({"params": params}, with_label, train=False), output)


def test_an_energy_without_the_label_or_a_wrong_input_width_is_an_error():
    model, params, image, label, hidden = small_network()
    nodes = {f"hidden_{i + 1}": {"value": v} for i, v in enumerate(hidden)}
    apply = lambda *a, **k: model.apply(*a, train=True, **k)  # noqa: E731
    with pytest.raises(ValueError, match="needs the label"):
        fpc.energy(apply, params, nodes, image, label)
    with pytest.raises(ValueError, match="the input has 8 features per example"):
        model.apply({"params": params}, jnp.zeros((2, 8)), train=False)


def test_generation_lowers_the_energy_and_keeps_the_top_down_start():
    model, params, _, label, _ = small_network()
    top_down, inferred, energy = generate.generate(
        model, params, label, output_energy=fpc.energies.squared_error, steps=50, learning_rate=0.02
    )
    assert top_down.shape == inferred.shape == (BATCH, SIZES[0])
    assert energy.shape == (51,)
    assert float(energy[-1]) < 0.5 * float(energy[0])
    assert np.all(
        np.diff(np.asarray(energy, np.float64)) <= 1e-4
    )  # small steps: the energy never rises


@pytest.mark.slow  # a run of the example
def test_bpc_config_trains_and_draws_its_samples(mnist_config, tmp_path, caplog):
    caplog.set_level("INFO")
    config = mnist_config(model="bpc", node_learning_rate=0.1, inference_steps=8, num_epochs=2)
    state = train.train_and_evaluate(config, str(tmp_path))
    assert (tmp_path / generate.SAMPLES_FILE).stat().st_size > 0
    assert set(state.params) == {f"{d}_{i}" for d in ("forward", "backward") for i in (1, 2, 3)}
    lines = log_lines(caplog)
    [final] = [line for line in lines if line.startswith("Final test accuracy")]
    assert float(final.split()[3].rstrip("%")) > 50  # synthetic blobs: chance is 10%
    [line] = [line for line in lines if "an image for each label" in line]
    start, end = (float(x) for x in line.split("energy per image ")[1].rstrip(").").split(" -> "))
    assert end < start


def test_a_bpc_trained_by_backprop_draws_no_samples(mnist_config, tmp_path, caplog):
    config = mnist_config(model="bpc", algorithm="bp")
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=1)
    generate.save_samples(config, train.create_model(config), state, tmp_path)
    assert not (tmp_path / generate.SAMPLES_FILE).exists()
    assert "algorithm 'bp' trains the forward weights alone" in caplog.text
