"""fpc.langevin: Langevin inference samples the closed-form posterior of a linear-Gaussian network.

The network: a latent ``z ~ N(0, I)`` (a node predicted by the model's input,
zeros) and an observation ``y = W2 z + N(0, I)`` (the output layer, clamped
to ``y``). Its energy is ``F = ½‖z‖² + ½‖y - W2 z‖²``, so the posterior
``p(z | y) ∝ exp(-F)`` is Gaussian with precision ``P = I + W2ᵀW2`` and mean
``P⁻¹ W2ᵀ y``.
"""

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import assert_trees_close

import flax_pc as fpc
from flax_pc._src import rngs

# kernel [latent 3, observed 4]: flax's Dense computes z @ kernel, so W2 = kernel.T.
KERNEL = np.array([[1.0, 0.5, 0.0, -0.3], [0.2, -0.8, 0.6, 0.1], [0.0, 0.3, -0.4, 0.9]], np.float32)
OBSERVED = np.array([1.0, -0.5, 0.3, 2.0], np.float32)
PRECISION = np.eye(3) + KERNEL.astype(np.float64) @ KERNEL.T  # I + W2ᵀW2
POSTERIOR_COVARIANCE = np.linalg.inv(PRECISION)
POSTERIOR_MEAN = POSTERIOR_COVARIANCE @ KERNEL @ OBSERVED
PARAMS = {"W2": {"kernel": KERNEL}}


class LinearGaussian(nn.Module):
    """``z ~ N(input, I)``, ``output = W2 z``: the input is the prior's mean (zeros)."""

    @nn.compact
    def __call__(self, prior_mean):
        z = fpc.PCNode(name="z")(prior_mean)
        return nn.Dense(4, use_bias=False, name="W2")(z)


def _samples(num_chains, *, learning_rate, steps, temperature=1.0, seed=0):
    """The final node of ``num_chains`` independent chains, one per example: ``[N, 3]``."""
    model = LinearGaussian()
    x = jnp.zeros((num_chains, 3))
    y = jnp.broadcast_to(OBSERVED, (num_chains, 4))
    nodes = fpc.init_nodes(model.apply, PARAMS, x)  # z = 0, the prior mean
    run = jax.jit(
        lambda nodes, key: fpc.infer(
            model.apply, PARAMS, nodes, x, y, rng=key,
            inference=fpc.Inference(fpc.langevin(learning_rate, temperature), steps, unroll=8),
        )[0]
    )  # fmt: skip
    return np.asarray(run(nodes, jax.random.key(seed))["z"]["value"], np.float64)


def _assert_gaussian(samples, mean, covariance, *, sigmas=4.5):
    """Sample mean and covariance within ``sigmas`` standard errors of ``mean``, ``covariance``.

    Standard errors of N independent draws of a Gaussian: ``sqrt(C_ii / N)``
    for the mean, ``sqrt((C_ii C_jj + C_ij²) / N)`` for the covariance's entries.
    """
    n = samples.shape[0]
    variances = np.diag(covariance)
    mean_error = (samples.mean(0) - mean) / np.sqrt(variances / n)
    covariance_se = np.sqrt((np.outer(variances, variances) + covariance**2) / n)
    covariance_error = (np.cov(samples.T) - covariance) / covariance_se
    assert np.all(np.abs(mean_error) < sigmas), mean_error
    assert np.all(np.abs(covariance_error) < sigmas), covariance_error


def test_samples_the_closed_form_posterior_of_a_linear_gaussian_network():
    # Step 0.003: the chain's stationary covariance is (P (I - lr P / 2))⁻¹, within
    # lr * λmax(P) / 2 = 0.4% of P⁻¹ (a sixth of the sampling error of 4000 draws, 2.2%).
    # Burn-in: 2000 steps from z = 0 shrink the slowest mode's start offset by
    # (1 - lr λmin)^2000 = e^-9.5 (λmin(P) = 1.58). Each example is its own chain and gives
    # one sample (its last), so the 4000 samples are independent: no thinning needed.
    assert np.linalg.eigvalsh(PRECISION).min() > 1.5
    samples = _samples(4000, learning_rate=0.003, steps=2000)
    _assert_gaussian(samples, POSTERIOR_MEAN, POSTERIOR_COVARIANCE)


def test_temperature_scales_the_posterior_covariance_and_large_steps_follow_the_chains_law():
    # The unadjusted chain z' = z - lr P (z - m) + sqrt(2 lr T) xi has the exact stationary
    # law N(m, T (P (I - lr P / 2))⁻¹): at lr = 0.1 that is 11-14% above T P⁻¹, far outside
    # the sampling error, so this checks the noise's scale and the drift together.
    learning_rate, temperature = 0.1, 0.5
    samples = _samples(4000, learning_rate=learning_rate, steps=150, temperature=temperature)
    chain_covariance = temperature * np.linalg.inv(
        PRECISION @ (np.eye(3) - learning_rate * PRECISION / 2)
    )
    _assert_gaussian(samples, POSTERIOR_MEAN, chain_covariance)
    with pytest.raises(AssertionError):
        _assert_gaussian(samples, POSTERIOR_MEAN, temperature * POSTERIOR_COVARIANCE)


def _free_walk(steps, key, *, learning_rate=0.5, batch=4000, infer=fpc.infer):
    """Langevin on a zero energy: a random walk from a N(0, I) draw (``value_init='normal'``).

    Returns:
      ``(start, end)``: the nodes drawn by ``init_nodes`` and those after ``steps`` steps,
      both from ``key``, ``[batch, 2]``.
    """

    def zero(value, prediction):
        return jnp.zeros(value.shape[0])

    model = nn.Sequential([fpc.PCNode(energy=zero, value_init="normal")])
    x = jnp.zeros((batch, 2))
    params = {}
    start = fpc.init_nodes(model.apply, params, x, rng=key)
    tx = fpc.langevin(learning_rate)
    if infer is fpc.infer:
        end, _ = fpc.infer(
            model.apply, params, start, x, x, inference=fpc.Inference(tx, steps),
            output_energy=zero, rng=key,
        )  # fmt: skip
    else:
        end = infer(
            model.apply, params, start, x, x, inference=fpc.Inference(tx, steps),
            output_energy=zero, rng=key,
        ).nodes  # fmt: skip
    value = lambda nodes: np.asarray(nodes["layers_0"]["value"], np.float64)  # noqa: E731
    return value(start), value(end)


def test_noise_is_new_per_example_and_per_step_and_independent_of_the_initial_draw():
    start, end = _free_walk(4, jax.random.key(0), learning_rate=0.5)
    walk = (end - start).ravel()
    # Four independent steps of variance 2 * lr = 1: variance 4 (16 if the steps shared a key).
    assert abs(walk.var() - 4.0) < 4.5 * 4.0 * np.sqrt(2 / walk.size)
    # Every example and entry its own noise: uncorrelated neighbours, nothing repeated.
    steps = (end - start).reshape(-1, 2)
    assert abs(np.corrcoef(steps[:-1, 0], steps[1:, 0])[0, 1]) < 4.5 / np.sqrt(len(steps))
    assert len(np.unique(steps[:, 0])) == len(steps)
    # The noise is not the key value_init='normal' drew the start from.
    one_start, one_end = _free_walk(1, jax.random.key(0))
    correlation = np.corrcoef(one_start.ravel(), (one_end - one_start).ravel())[0, 1]
    assert abs(correlation) < 4.5 / np.sqrt(one_start.size)


def test_the_same_key_gives_the_same_samples_and_another_key_others():
    start, end = _free_walk(3, jax.random.key(1), batch=8)
    _, again = _free_walk(3, jax.random.key(1), batch=8)
    _, other = _free_walk(3, jax.random.key(2), batch=8)
    np.testing.assert_array_equal(end, again)
    assert not np.any(end - start == other - _free_walk(0, jax.random.key(2), batch=8)[0])
    # infer_to_equilibrium's steps take the same keys as infer's.
    _, equilibrium = _free_walk(3, jax.random.key(1), batch=8, infer=fpc.infer_to_equilibrium)
    np.testing.assert_allclose(end, equilibrium, rtol=1e-5)


def _mlp():
    model = nn.Sequential([nn.Dense(5), nn.tanh, fpc.PCNode(), nn.Dense(3)])
    x = np.random.default_rng(0).standard_normal((6, 4), np.float32)
    y = np.random.default_rng(1).standard_normal((6, 3), np.float32)
    return model, model.init(jax.random.key(0), x)["params"], x, y


def test_temperature_zero_is_exactly_sgd_and_needs_no_rng():
    model, params, x, y = _mlp()
    nodes = fpc.init_nodes(model.apply, params, x)
    run = lambda tx, rng: fpc.infer(  # noqa: E731
        model.apply, params, nodes, x, y, inference=fpc.Inference(tx, 4), rng=rng
    )
    sgd = run(optax.sgd(0.1), None)
    assert_trees_close(run(fpc.langevin(0.1, temperature=0.0), None), sgd, rtol=0)
    assert_trees_close(run(fpc.langevin(0.1, temperature=0), jax.random.key(0)), sgd, rtol=0)
    # The train step too (its first step takes the forward-initialisation shortcut).
    states = [
        fpc.PCTrainState.create(
            apply_fn=model.apply,
            params=params,
            tx=optax.sgd(0.01),
            inference=fpc.Inference(tx, 4),
        )  # fmt: skip
        for tx in (optax.sgd(0.1), fpc.langevin(0.1, temperature=0.0))
    ]
    (sgd_state, sgd_metrics), (langevin_state, langevin_metrics) = [
        jax.jit(lambda s: s.train_step(x, y))(s) for s in states
    ]
    assert_trees_close(langevin_state.params, sgd_state.params, rtol=0)
    assert_trees_close(langevin_metrics, sgd_metrics, rtol=0)


def test_works_in_an_optax_chain_and_with_a_temperature_schedule():
    model, params, x, y = _mlp()
    nodes = fpc.init_nodes(model.apply, params, x)
    key = jax.random.key(3)

    def run(tx):
        end, _ = fpc.infer(
            model.apply, params, nodes, x, y, inference=fpc.Inference(tx, 5), rng=key
        )
        return end

    plain = run(fpc.langevin(0.05))
    assert_trees_close(run(optax.chain(optax.identity(), fpc.langevin(0.05))), plain, rtol=0)
    scheduled = optax.inject_hyperparams(fpc.langevin)(learning_rate=0.05, temperature=1.0)
    assert_trees_close(run(scheduled), plain, rtol=1e-6, atol=1e-7)
    cooled = optax.inject_hyperparams(fpc.langevin)(
        learning_rate=0.05, temperature=optax.constant_schedule(0.0)
    )
    assert_trees_close(run(cooled), run(optax.sgd(0.05)), rtol=1e-6, atol=1e-7)


def test_mcpc_trains_with_pc_train_state_ipc_and_train_epoch():
    model, params, x, y = _mlp()

    def state(algorithm: Literal["pc", "ipc"] = "pc"):
        return fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.sgd(0.01),
            inference=fpc.Inference(fpc.langevin(0.05), 3), algorithm=algorithm,
        )  # fmt: skip

    step = jax.jit(lambda s, key: s.train_step(x, y, rng=key))
    one, metrics = step(state(), jax.random.key(0))
    again, _ = step(state(), jax.random.key(0))
    other, _ = step(state(), jax.random.key(1))
    assert metrics["energy"].shape == (4,)
    assert_trees_close(one.params, again.params, rtol=0)
    assert not np.allclose(one.params["layers_0"]["kernel"], other.params["layers_0"]["kernel"])
    ipc, _ = step(state("ipc"), jax.random.key(0))
    assert np.all(np.isfinite(ipc.params["layers_0"]["kernel"]))
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size",))
    trained, epoch_metrics = epoch(state(), x, y, jax.random.key(0), batch_size=3)
    assert epoch_metrics["energy"].shape == (2, 4)
    assert not np.allclose(
        trained.params["layers_0"]["kernel"], jnp.asarray(params["layers_0"]["kernel"])
    )


def test_without_an_rng_is_a_clear_error():
    model, params, x, y = _mlp()
    nodes = fpc.init_nodes(model.apply, params, x)
    with pytest.raises(ValueError, match="fpc.langevin draws its noise from the RNG stream"):
        fpc.infer(model.apply, params, nodes, x, y, inference=fpc.Inference(fpc.langevin(0.1), 2))
    with pytest.raises(ValueError, match="'pc_noise'"):
        fpc.infer(
            model.apply, params, nodes, x, y, inference=fpc.Inference(fpc.langevin(0.1), 2),
            rng={"dropout": jax.random.key(0)},
        )  # fmt: skip
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(0.01),
        inference=fpc.Inference(fpc.langevin(0.1), 2),
    )  # fmt: skip
    with pytest.raises(ValueError, match="pass rng=key"):
        state.train_step(x, y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0"),
        ({"learning_rate": -0.1}, ValueError, "learning_rate must be > 0"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be > 0"),
        ({"learning_rate": "0.1"}, TypeError, "learning_rate must be a number"),
        ({"learning_rate": 0.1, "temperature": -1.0}, ValueError, "temperature must be >= 0"),
        ({"learning_rate": 0.1, "temperature": True}, TypeError, "temperature must be a number"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fpc.langevin(**kwargs)


def test_step_keys_differ_from_the_node_initialisation_keys():
    # The noise's base key is not the NOISE key itself (which the node draws derive keys from).
    streams = rngs.as_rngs(jax.random.key(0))
    from flax_pc._src import langevin

    assert streams is not None
    base = langevin.noise_key(streams)
    assert base is not None
    assert not np.array_equal(jax.random.key_data(base), jax.random.key_data(streams[fpc.NOISE]))
    assert langevin.noise_key({"dropout": jax.random.key(0)}) is None
