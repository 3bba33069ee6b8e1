"""Temporal PC (fpc.temporal): the closed-form MAP at each step, a Kalman filter, learning.

References are independent: the MAP of a linear-Gaussian step solved by
NumPy, a Kalman filter written from its equations in NumPy, and loops of the
public single-step functions (``state.train_step``, ``fpc.infer``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from helpers import assert_trees_close

import flax_pc as fpc
from flax_pc import temporal


class LinearGaussian(nn.Module):
    """``z_t = A z_{t-1} + B u_t + noise`` (node precision ``precision``), ``y_t = C z_t``."""

    latent_size: int
    observation_size: int
    precision: float = 1.0
    controlled: bool = True

    @nn.compact
    def __call__(self, inputs):
        previous, control = inputs if self.controlled else (inputs, None)
        prior = nn.Dense(self.latent_size, use_bias=False, name="A")(previous)
        if control is not None:
            prior = prior + nn.Dense(self.latent_size, use_bias=False, name="B")(control)
        z = fpc.PCNode(precision=self.precision, name="latent")(prior)
        return nn.Dense(self.observation_size, use_bias=False, name="C")(z)


def linear_params(A, C, B=None):
    """The params of :class:`LinearGaussian` for the matrices (``y = x @ kernel``)."""
    params = {"A": {"kernel": jnp.asarray(A.T)}, "C": {"kernel": jnp.asarray(C.T)}}
    if B is not None:
        params["B"] = {"kernel": jnp.asarray(B.T)}
    return params


def gradient_descent_rate(curvature):
    """A node SGD step that converges on a quadratic energy of Hessian ``curvature``."""
    return float(1.0 / np.linalg.eigvalsh(curvature).max())


# --- The closed form of each step -------------------------------------------------


def test_equilibrium_latent_is_the_map_of_each_step_given_the_previous_estimate():
    rng = np.random.default_rng(0)
    latent, observed, control, batch, length = 3, 5, 2, 4, 12
    pi_z, pi_y = 2.0, 4.0
    A = 0.9 * np.linalg.qr(rng.normal(size=(latent, latent)))[0]
    B = rng.normal(size=(latent, control))
    C = rng.normal(size=(observed, latent)) / np.sqrt(observed)
    us = rng.normal(size=(length, batch, control)).astype(np.float32)
    ys = rng.normal(size=(length, batch, observed)).astype(np.float32)
    z0 = rng.normal(size=(batch, latent)).astype(np.float32)
    model = LinearGaussian(latent, observed, precision=pi_z)
    curvature = pi_z * np.eye(latent) + pi_y * C.T @ C
    inference = fpc.Inference(optax.sgd(gradient_descent_rate(curvature)), 2000, tolerance=1e-5)

    @jax.jit
    def run(params):
        return temporal.infer_sequence(
            model.apply, params, z0, ys, controls=us, inference=inference,
            output_energy=lambda y, out: pi_y * fpc.energies.squared_error(y, out),
        )  # fmt: skip

    result = run(linear_params(A, C, B))
    latents = np.asarray(result.latents, np.float64)
    previous = np.concatenate([z0[None], latents[:-1]])
    # The MAP of 1/2 pi_z |z - A z' - B u|^2 + 1/2 pi_y |y - C z|^2, given the estimate z'.
    rhs = pi_z * (previous @ A.T + us @ B.T) + pi_y * ys @ C
    expected = np.linalg.solve(curvature, rhs[..., None])[..., 0]
    np.testing.assert_allclose(latents, expected, atol=1e-5)
    assert np.all(np.asarray(result.steps) < 2000)  # each step reached the tolerance
    # The prediction of each observation is made from the previous estimate alone.
    np.testing.assert_allclose(
        result.predictions, (previous @ A.T + us @ B.T) @ C.T, rtol=1e-5, atol=1e-5
    )
    assert result.energy.total.shape == (length,)
    assert result.energy.per_example.shape == (length, batch)


def test_predict_sequence_runs_the_model_dynamics():
    rng = np.random.default_rng(1)
    A, B, C = rng.normal(size=(2, 2)) / 2, rng.normal(size=(2, 1)), rng.normal(size=(3, 2))
    us = rng.normal(size=(6, 1, 1)).astype(np.float32)
    z = z0 = np.ones((1, 2), np.float32)
    model = LinearGaussian(2, 3)
    latents, outputs = jax.jit(
        lambda p: temporal.predict_sequence(model.apply, p, z0, controls=us)
    )(linear_params(A, C, B))
    for t in range(6):
        z = z @ A.T + us[t] @ B.T
        np.testing.assert_allclose(latents[t], z, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(outputs[t], z @ C.T, rtol=1e-5, atol=1e-6)


# --- Filtering: a noisy linear dynamical system, against a Kalman filter -----------

#: A 2-D rotation (0.1 rad per step, damped by 0.99) with process noise of variance
#: Q_VAR, observed through a random 10 x 2 projection with noise of variance R_VAR.
ANGLE, DAMPING, Q_VAR, R_VAR, OBSERVED = 0.1, 0.99, 0.1, 0.02, 10


def rotation_system(seed, length):
    """``(A, C, states [T, 2], observations [T, 10])``; A and C are the same for every seed."""
    rng = np.random.default_rng(seed)
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    A = DAMPING * np.array([[c, -s], [s, c]])
    C = np.random.default_rng(123).normal(size=(OBSERVED, 2)) / np.sqrt(OBSERVED)
    x, states, observations = np.zeros(2), [], []
    for _ in range(length):
        x = A @ x + rng.normal(size=2) * np.sqrt(Q_VAR)
        states.append(x)
        observations.append(C @ x + rng.normal(size=OBSERVED) * np.sqrt(R_VAR))
    return A, C, np.array(states), np.array(observations, np.float32)


def kalman_filter(A, C, observations):
    """The Kalman filter's posterior means, from the prior ``x_0 = 0`` known exactly."""
    mean, covariance, means = np.zeros(2), np.zeros((2, 2)), []
    for y in observations:
        mean, covariance = A @ mean, A @ covariance @ A.T + Q_VAR * np.eye(2)
        gain = covariance @ C.T @ np.linalg.inv(C @ covariance @ C.T + R_VAR * np.eye(len(y)))
        mean = mean + gain @ (y - C @ mean)
        covariance = covariance - gain @ C @ covariance
        means.append(mean)
    return np.array(means)


def mse(estimates, states):
    return float(np.mean(np.sum((estimates - states) ** 2, axis=-1)))


#: The tracker's energy scaled by the observation noise's variance: the latent's
#: precision is R_VAR / Q_VAR and the output's 1 (the same MAP as 1/Q and 1/R).
TRACKER = LinearGaussian(2, OBSERVED, precision=R_VAR / Q_VAR, controlled=False)


def filtered(params, observations, inference):
    """The tracker's latents over one sequence ``[T, D]`` (a batch of one), ``[T, 2]``."""
    result = temporal.infer_sequence(
        TRACKER.apply, params, jnp.zeros((1, 2)), observations[:, None], inference=inference
    )
    return result.latents[:, 0]


def test_tpc_with_known_matrices_tracks_within_ten_percent_of_the_kalman_filter():
    A, C, states, observations = rotation_system(seed=0, length=1000)
    curvature = R_VAR / Q_VAR * np.eye(2) + C.T @ C
    inference = fpc.Inference(optax.sgd(gradient_descent_rate(curvature)), 200, tolerance=1e-5)
    latents = jax.jit(filtered, static_argnums=2)(linear_params(A, C), observations, inference)
    tpc, kalman = mse(np.asarray(latents), states), mse(kalman_filter(A, C, observations), states)
    least_squares = np.linalg.lstsq(C, observations.T, rcond=None)[0].T  # no dynamics
    assert tpc <= 1.10 * kalman, (tpc, kalman)
    # The dynamics matter here: without them, the error is over 20% larger.
    assert mse(least_squares, states) >= 1.2 * kalman
    assert tpc < mse(least_squares, states)


def test_tpc_learning_the_matrices_tracks_within_25_percent_of_the_kalman_filter():
    A, C, train_states, train_observations = rotation_system(seed=0, length=2000)
    _, _, states, observations = rotation_system(seed=1, length=1000)
    params = TRACKER.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    # Weight decay on C keeps the latent's scale: without it C grows and the latent
    # shrinks (the energy falls along that direction), weakening the dynamics' prior.
    decay_c = {"A": {"kernel": False}, "C": {"kernel": True}}
    state = fpc.PCTrainState.create(
        apply_fn=TRACKER.apply, params=params,
        tx=optax.adamw(3e-3, weight_decay=0.1, mask=decay_c),
        inference=fpc.Inference(optax.sgd(0.05), 100),
    )  # fmt: skip
    train = jax.jit(
        lambda s, ys: temporal.train_sequence(s, jnp.zeros((1, 2)), ys[:, None], update="step")
    )
    for _ in range(4):
        state, result = train(state, train_observations)
    assert np.all(np.isfinite(result.energy.total))
    run = jax.jit(filtered, static_argnums=2)
    # The latent's basis is the learner's own: map it to the state by least squares
    # fitted on the training sequence, then score the test sequence.
    train_latents = np.asarray(run(state.params, train_observations, state.inference))
    basis = np.linalg.lstsq(train_latents, train_states, rcond=None)[0]
    latents = np.asarray(run(state.params, observations, state.inference)) @ basis
    tpc, kalman = mse(latents, states), mse(kalman_filter(A, C, observations), states)
    assert tpc <= 1.25 * kalman, (tpc, kalman)


# --- Learning: the weight steps are those of the single-step API -----------------


class Recurrent(nn.Module):
    """A latent predicted from tanh of the previous one, a hidden node, an output."""

    @nn.compact
    def __call__(self, previous):
        z = fpc.PCNode(name="latent")(nn.Dense(4)(nn.tanh(previous)))
        h = fpc.PCNode(name="hidden")(nn.Dense(6)(nn.tanh(z)))
        return nn.Dense(3)(nn.tanh(h))


def recurrent_state(tx=None):
    model = Recurrent()
    params = model.init(jax.random.key(0), jnp.zeros((2, 4)))["params"]
    return fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=tx or optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.2), 8),
    )  # fmt: skip


SEQUENCE = np.random.default_rng(2).normal(size=(5, 2, 3)).astype(np.float32)
Z0 = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)


def settle(state, previous, observation):
    """The nodes of one step by the single-step API: forward initialisation, then inference."""
    nodes = fpc.init_nodes(state.apply_fn, state.params, previous)
    nodes, _ = fpc.infer(
        state.apply_fn, state.params, nodes, previous, observation, inference=state.inference
    )
    return nodes


def test_a_weight_step_per_time_step_is_train_step_at_each_step():
    state = recurrent_state(optax.adam(1e-2))
    new, result = jax.jit(lambda s: temporal.train_sequence(s, Z0, SEQUENCE))(state)
    previous, step = Z0, jax.jit(lambda s, x, y: (s.train_step(x, y)[0], settle(s, x, y)))
    for t, observation in enumerate(SEQUENCE):
        state, nodes = step(state, previous, observation)
        np.testing.assert_allclose(result.latents[t], nodes["latent"]["value"], rtol=1e-5)
        previous = nodes["latent"]["value"]
    assert_trees_close(new.params, state.params, rtol=1e-5, atol=1e-6)
    assert int(new.step) == len(SEQUENCE)


def test_a_weight_step_per_sequence_sums_the_gradients_of_the_steps():
    state = recurrent_state()
    new, result = jax.jit(lambda s: temporal.train_sequence(s, Z0, SEQUENCE, update="sequence"))(
        state
    )

    @jax.jit
    def gradient(previous, observation):
        nodes = settle(state, previous, observation)
        grads = jax.grad(
            lambda p: fpc.energy(state.apply_fn, p, nodes, previous, observation).total
        )(state.params)
        return grads, nodes["latent"]["value"]

    summed, previous = jax.tree_util.tree_map(jnp.zeros_like, state.params), Z0
    for observation in SEQUENCE:
        grads, previous = gradient(previous, observation)
        summed = jax.tree_util.tree_map(jnp.add, summed, grads)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, state.params, summed)
    assert_trees_close(new.params, expected, rtol=1e-5, atol=1e-6)
    assert int(new.step) == 1
    # Its inference ran with the weights of the sequence's start: those of infer_sequence.
    fixed = temporal.infer_sequence(
        state.apply_fn, state.params, Z0, SEQUENCE, inference=state.inference
    )
    np.testing.assert_allclose(result.latents, fixed.latents, rtol=1e-6)
    np.testing.assert_allclose(result.energy.total, fixed.energy.total, rtol=1e-6)


# --- NNX -------------------------------------------------------------------------


class NNXRecurrent(nnx.Module):
    """:class:`Recurrent` in Flax NNX."""

    def __init__(self, rngs):
        self.into = nnx.Linear(4, 4, rngs=rngs)
        self.latent = fpc.nnx.PCNode()
        self.up = nnx.Linear(4, 6, rngs=rngs)
        self.hidden = fpc.nnx.PCNode()
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, previous):
        z = self.latent(self.into(jnp.tanh(previous)))
        return self.out(jnp.tanh(self.hidden(self.up(jnp.tanh(z)))))


def nnx_twin(params):
    model = NNXRecurrent(nnx.Rngs(0))
    for layer, name in ((model.into, "Dense_0"), (model.up, "Dense_1"), (model.out, "Dense_2")):
        assert layer.bias is not None
        layer.kernel[...] = params[name]["kernel"]
        layer.bias[...] = params[name]["bias"]
    return model


def test_nnx_models_infer_learn_and_predict_as_linen_ones():
    state = recurrent_state()
    model = nnx_twin(state.params)
    linen = temporal.infer_sequence(
        state.apply_fn, state.params, Z0, SEQUENCE, inference=state.inference
    )
    result = nnx.jit(lambda m: fpc.nnx.infer_sequence(m, Z0, SEQUENCE, inference=state.inference))(
        model
    )
    np.testing.assert_allclose(result.latents, linen.latents, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.energy.total, linen.energy.total, rtol=1e-5)

    latents, outputs = fpc.nnx.predict_sequence(model, Z0, length=3)
    expected = temporal.predict_sequence(state.apply_fn, state.params, Z0, length=3)
    np.testing.assert_allclose(latents, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs, expected[1], rtol=1e-5, atol=1e-6)

    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def train(model, optimizer):
        return fpc.nnx.train_sequence(model, optimizer, Z0, SEQUENCE, inference=state.inference)

    train(model, optimizer)
    new, _ = temporal.train_sequence(state, Z0, SEQUENCE)
    assert model.out.bias is not None
    np.testing.assert_allclose(
        np.asarray(model.into.kernel[...]), np.asarray(new.params["Dense_0"]["kernel"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(model.out.bias[...]), np.asarray(new.params["Dense_2"]["bias"]), rtol=1e-5
    )
    assert int(optimizer.step[...]) == len(SEQUENCE)


# --- Bad input -------------------------------------------------------------------


def test_bad_input_says_what_to_fix():
    state = recurrent_state()
    infer = state.inference
    with pytest.raises(ValueError, match=r"names no node.*\['hidden', 'latent'\]"):
        temporal.infer_sequence(state.apply_fn, state.params, Z0, SEQUENCE, inference=infer,
                                latent="z")  # fmt: skip
    with pytest.raises(ValueError, match="initial must have the shape of the carried latent"):
        temporal.infer_sequence(state.apply_fn, state.params, Z0, SEQUENCE, inference=infer,
                                latent=lambda nodes: nodes["hidden"]["value"])  # fmt: skip
    with pytest.raises(ValueError, match="lengths disagree: observations 5, controls 4"):
        temporal.infer_sequence(
            state.apply_fn, state.params, Z0, SEQUENCE, inference=infer, controls=SEQUENCE[:4]
        )
    with pytest.raises(TypeError, match="give inference=fpc.Inference"):
        temporal.infer_sequence(state.apply_fn, state.params, Z0, SEQUENCE)
    with pytest.raises(ValueError, match="update must be one of"):
        temporal.train_sequence(state, Z0, SEQUENCE, update="epoch")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="algorithm='pc'"):
        temporal.train_sequence(state.replace(algorithm="ipc"), Z0, SEQUENCE)
    with pytest.raises(ValueError, match="no length"):
        temporal.predict_sequence(state.apply_fn, state.params, Z0)


def test_an_error_node_cannot_be_carried():
    class ErrorLatent(nn.Module):
        @nn.compact
        def __call__(self, previous):
            return nn.Dense(3)(fpc.PCNode(latent="error", name="latent")(nn.Dense(4)(previous)))

    model = ErrorLatent()
    params = model.init(jax.random.key(0), Z0)["params"]
    with pytest.raises(ValueError, match="stores its error"):
        temporal.infer_sequence(
            model.apply, params, Z0, SEQUENCE, inference=fpc.Inference(optax.sgd(0.1), 2)
        )
