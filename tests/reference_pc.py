"""Predictive coding for a tanh MLP written straight from the equations.

No flax_pc import: this is the independent reference the tests compare with.
Weights are a list of ``(kernel [in, out], bias [out])``; hidden layers are
``mu_l = tanh(v_{l-1} @ K_l + b_l)`` with ``v_0 = x``; the output is linear and
its node is clamped to the target. ``F = sum_b sum_l 0.5 ||v_l - mu_l||^2``.
"""

import jax
import jax.numpy as jnp


def predictions(weights, x, values):
    """mu_l for every layer, given the node values (v_0 = x)."""
    inputs = [x] + list(values)
    mus = []
    for i, (kernel, bias) in enumerate(weights):
        pre = inputs[i] @ kernel + bias
        mus.append(pre if i == len(weights) - 1 else jnp.tanh(pre))
    return mus


def feed_forward(weights, x):
    values = []
    h = x
    for i, (kernel, bias) in enumerate(weights):
        h = h @ kernel + bias
        if i < len(weights) - 1:
            h = jnp.tanh(h)
            values.append(h)
    return values, h


def energy(weights, x, values, y):
    mus = predictions(weights, x, values)
    total = 0.5 * jnp.sum((y - mus[-1]) ** 2)
    for v, mu in zip(values, mus[:-1]):
        total = total + 0.5 * jnp.sum((v - mu) ** 2)
    return total


def node_step(weights, x, values, y, lr):
    """v_l <- v_l - lr (e_l - J_l^T e_{l+1}), with e_l = v_l - mu_l (hand-derived)."""
    mus = predictions(weights, x, values)
    errors = [v - mu for v, mu in zip(values, mus[:-1])] + [y - mus[-1]]
    new_values = []
    for l, v in enumerate(values):
        kernel, _ = weights[l + 1]
        upper = errors[l + 1]
        if l + 1 < len(values):  # the layer above is tanh: J = diag(1 - mu^2) K^T
            upper = upper * (1 - mus[l + 1] ** 2)
        new_values.append(v - lr * (errors[l] - upper @ kernel.T))
    return new_values


def weight_gradients(weights, x, values, y):
    """dF/dK_l = -v_{l-1}^T (e_l * f'(.)), dF/db_l = -sum_b e_l * f'(.)."""
    mus = predictions(weights, x, values)
    inputs = [x] + list(values)
    targets = list(values) + [y]
    grads = []
    for i in range(len(weights)):
        delta = targets[i] - mus[i]
        if i < len(weights) - 1:
            delta = delta * (1 - mus[i] ** 2)
        grads.append((-inputs[i].T @ delta, -jnp.sum(delta, axis=0)))
    return grads


def backprop_gradients(weights, x, y):
    def loss(weights):
        _, out = feed_forward(weights, x)
        return 0.5 * jnp.sum((y - out) ** 2)

    return jax.grad(loss)(weights)


def from_flax(params):
    """Flax MLP params {'Dense_i': {'kernel', 'bias'}} -> list of (kernel, bias)."""
    n = len(params)
    return [(params[f"Dense_{i}"]["kernel"], params[f"Dense_{i}"]["bias"]) for i in range(n)]
