"""What ``rng=`` accepts: a key used as given, an int seed that gives every step new keys."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import flax_pc as fpc
from flax_pc._src import rngs


class DropoutMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = fpc.PCNode()(nn.Dropout(0.5, deterministic=False)(nn.tanh(nn.Dense(32)(x))))
        return nn.Dense(2)(x)


X = jnp.ones((4, 3))
Y = jnp.zeros((4, 2))
MODEL = DropoutMLP()
PARAMS = MODEL.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)["params"]


def _mask(rng_streams):
    """The dropout mask a pass draws with these ``rngs``: zeroed units of the hidden layer."""
    _, state = MODEL.apply(
        {"params": PARAMS}, X, rngs=rng_streams, mutable=["intermediates"],
        capture_intermediates=lambda module, _: isinstance(module, nn.Dropout),
    )  # fmt: skip
    (dropped,) = jax.tree_util.tree_leaves(state["intermediates"])
    return np.asarray(dropped == 0)


def test_an_int_seed_gives_each_step_its_own_keys():
    state = fpc.PCTrainState.create(
        apply_fn=MODEL.apply, params=PARAMS, tx=optax.sgd(0.0),
        inference=fpc.Inference(optax.sgd(0.1), 2),
    )  # fmt: skip
    seen = []
    step = jax.jit(lambda s: s.train_step(X, Y, rng=0))
    for expected_step in range(3):
        # The keys of step t: jax.random.key(0) folded with t, then split per stream.
        streams = rngs.as_rngs(jax.random.fold_in(jax.random.key(0), expected_step))
        assert streams is not None
        seen.append(_mask(streams))
        np.testing.assert_array_equal(
            jax.random.key_data(rngs.as_rngs(0, step=state.step)["dropout"]),  # type: ignore[index]
            jax.random.key_data(streams["dropout"]),
        )
        state, _ = step(state)
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])


def test_a_key_is_used_as_given():
    key = jax.random.key(3)
    for step in (None, 0, 5):
        np.testing.assert_array_equal(
            jax.random.key_data(rngs.as_key(key, "rng", step=step)), jax.random.key_data(key)
        )
    given = {"dropout": key}
    assert rngs.as_rngs(given, step=7) == given


def test_train_epoch_with_an_int_seed_draws_a_new_order_each_epoch():
    state = fpc.PCTrainState.create(
        apply_fn=MODEL.apply, params=PARAMS, tx=optax.sgd(0.0),
        inference=fpc.Inference(optax.sgd(0.1), 1),
    )  # fmt: skip
    inputs = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)
    targets = jnp.zeros((8, 2))
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size",))
    first, _ = epoch(state, inputs, targets, 0, batch_size=4)
    orders = [
        fpc.epoch_batches(0, 8, 4, step=s)[0] for s in (state.step, first.step)
    ]  # what each epoch of train_epoch sees
    assert not np.array_equal(orders[0], orders[1])
    with pytest.raises(TypeError, match=r"jax.random.key\(0\)"):
        fpc.epoch_batches(0.5, 8, 4)  # pyright: ignore[reportArgumentType]
