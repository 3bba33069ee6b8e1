"""Flax's errors rewritten into what to pass to flax_pc, checked against the installed Flax.

Each rewrite reads a name from Flax's message: these tests make the installed
Flax raise each error and check that the name is read (so a Flax release that
rewords its message fails here), and that a message whose wording changed
still gives a useful error.
"""

import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import errors as flax_errors
from flax import linen as nn

import flax_pc as fpc
from flax_pc._src import model_calls


class DropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x))
        return nn.Dense(2)(fpc.PCNode()(x))


class NoisyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x) + jax.random.normal(self.make_rng("augment"), (x.shape[0], 4))
        return nn.Dense(2)(fpc.PCNode()(x))


class NormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))
        return nn.Dense(2)(fpc.PCNode()(x))


X, Y = jnp.ones((3, 5)), jnp.zeros((3, 2))


def test_the_installed_flax_names_the_stream_where_the_pattern_reads_it():
    model = DropoutNet()
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, X)
    with pytest.raises(flax_errors.InvalidRngError) as caught:
        model.apply({"params": variables["params"]}, X)
    match = re.search(model_calls.RNG_PATTERN, str(caught.value))
    assert match is not None and match[1] == "dropout"


@pytest.mark.parametrize(
    "given, error_type",
    [
        (("params",), flax_errors.ScopeCollectionNotFound),  # batch_stats not given
        (("params", "batch_stats"), flax_errors.ModifyScopeVariableError),  # not mutable
    ],
)
def test_the_installed_flax_names_the_collection_where_the_pattern_reads_it(given, error_type):
    model = NormNet()
    variables = model.init(jax.random.key(0), X)
    with pytest.raises(error_type) as caught:
        model.apply({name: variables[name] for name in given}, X)
    match = re.search(model_calls.COLLECTION_PATTERN, str(caught.value))
    assert match is not None and match[1] == "batch_stats"


@pytest.mark.parametrize(
    "model, rngs, match",
    [
        (DropoutNet(), {"dropout": 1}, r"RNG stream 'dropout' .* pass rng=key \(a bare key feeds"),
        (
            NoisyNet(),
            {"augment": 1},
            r"RNG stream 'augment' .* pass rng=\{'augment': key, \.\.\.\}",
        ),
    ],
)
def test_a_missing_stream_says_what_to_pass(model, rngs, match):
    params = model.init(
        {"params": jax.random.key(0), **{k: jax.random.key(v) for k, v in rngs.items()}}, X
    )["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.1), 2),
    )  # fmt: skip
    with pytest.raises(ValueError, match=match):
        state.train_step(X, Y)


def test_a_missing_collection_says_what_to_pass():
    model = NormNet()
    params = model.init(jax.random.key(0), X)["params"]
    with pytest.raises(
        ValueError, match=r"collection 'batch_stats' .* model_state=\{'batch_stats'"
    ):
        fpc.init_nodes(model.apply, params, X)


def test_a_reworded_flax_message_still_gives_a_useful_error():
    rng = model_calls.rng_error(flax_errors.InvalidRngError("some new wording"))
    assert "an RNG stream that was given no key" in str(rng) and "some new wording" in str(rng)
    collection = model_calls.collection_error(ValueError("other words"))
    assert "uses a variable collection" in str(collection)
    assert "model_state={name: variables[name]}" in str(collection)
    assert "other words" in str(collection)
