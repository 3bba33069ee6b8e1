"""Generative mode: a decoder whose top latent node is inferred, data clamped at the output."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import flax_pc as fpc

LATENT = 16


class Decoder(nn.Module):
    """z ~ N(0, I) (the top node, predicted by the zero input) -> tanh layer -> image."""

    @nn.compact
    def __call__(self, prior_mean):
        z = fpc.PCNode(value_init="zeros")(prior_mean)
        h = fpc.PCNode()(nn.tanh(nn.Dense(64)(z)))
        return nn.Dense(64)(h)


def _reconstruct(model, params, images, mask, steps=200):
    prior_mean = jnp.zeros((images.shape[0], LATENT))
    nodes = fpc.init_nodes(model.apply, params, prior_mean)
    energy = fpc.energies.masked(fpc.energies.squared_error, mask)
    nodes, _ = fpc.infer(
        model.apply, params, nodes, prior_mean, images,
        inference=fpc.Inference(optax.sgd(0.1), steps), output_energy=energy,
    )  # fmt: skip
    return model.apply({"params": params, fpc.NODES: nodes}, prior_mean)


def test_masked_energy_ignores_masked_entries():
    mask = jnp.array([[1.0, 0.0]])
    energy = fpc.energies.masked(fpc.energies.squared_error, mask)
    np.testing.assert_allclose(energy(jnp.array([[1.0, 5.0]]), jnp.array([[0.0, -5.0]])), [0.5])


def test_decoder_learns_and_fills_in_the_missing_half():
    from sklearn.datasets import load_digits  # not at import: sklearn takes seconds to load

    images = load_digits(return_X_y=True)[0].astype(np.float32) / 16.0
    order = np.random.default_rng(0).permutation(len(images))
    train, test = images[order[:1400]], images[order[1400:]]
    model = Decoder()
    params = model.init(jax.random.key(0), jnp.zeros((1, LATENT)))["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(3e-3),
        inference=fpc.Inference(optax.sgd(0.1), 20),
    )  # fmt: skip
    reconstruct = jax.jit(_reconstruct, static_argnums=0)
    epoch = jax.jit(fpc.train_epoch, static_argnames="batch_size")
    every_pixel = jnp.ones((1, 64))
    top_half = jnp.concatenate([jnp.ones((1, 32)), jnp.zeros((1, 32))], axis=1)

    def held_out_mse():
        return float(jnp.mean((reconstruct(model, state.params, test, every_pixel) - test) ** 2))

    before = held_out_mse()
    for i in range(10):
        prior_mean = jnp.zeros((len(train), LATENT))
        state, _ = epoch(state, prior_mean, train, jax.random.key(i), batch_size=64)
    after = held_out_mse()
    assert after < 0.5 * before, (before, after)

    filled = reconstruct(model, state.params, test, top_half)
    bottom_error = float(np.mean((filled[:, 32:] - test[:, 32:]) ** 2))
    mean_image_error = float(np.mean((train.mean(0)[32:] - test[:, 32:]) ** 2))
    assert bottom_error < 0.85 * mean_image_error, (bottom_error, mean_image_error)
