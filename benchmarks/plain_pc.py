"""Predictive coding and backprop in plain JAX, written from the equations.

The yardstick flax_pc is measured against: no flax_pc, no flax. A network is a
list of layer functions ``mu_l = layer_l(w_l, v_{l-1})`` (``v_0 = x``) and a
list of weights ``w_l = {'kernel', 'bias'}``. A value node ``v_l`` sits after
every layer but the last; the output prediction is compared with the target
(the output node is clamped to it). The energy is the total over the batch,

    F = sum_b [ sum_{l<L} 0.5 ||v_l - mu_l||^2 + 0.5 ||y - mu_L||^2 ],

and one PC train step is: ``v_l = mu_l`` by a forward pass, ``T`` steps of
``v <- v - node_lr * dF/dv``, then one optax step on ``dF/dw`` at the final
nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Weights = list[dict[str, Array]]
Layer = Callable[[dict[str, Array], Array], Array]
#: ``step(weights, opt_state, x, y) -> (weights, opt_state, metrics)``
Step = Callable[..., tuple[Weights, Any, dict[str, Array]]]


# --- layers -------------------------------------------------------------------


def dense(w: dict[str, Array], h: Array) -> Array:
    """``h @ kernel + bias`` (the output layer of the MLP)."""
    return h @ w["kernel"] + w["bias"]


def tanh_dense(w: dict[str, Array], h: Array) -> Array:
    """``tanh(h @ kernel + bias)``: a hidden layer of the MLP."""
    return jnp.tanh(dense(w, h))


def flatten_dense(w: dict[str, Array], h: Array) -> Array:
    """Flattens ``[B, ...]`` feature maps, then :func:`dense`."""
    return dense(w, h.reshape(h.shape[0], -1))


def conv_same(w: dict[str, Array], h: Array) -> Array:
    """A stride-1 convolution with 'SAME' padding, plus the bias: NHWC maps, HWIO kernel."""
    pre = jax.lax.conv_general_dilated(
        h,
        w["kernel"],
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return pre + w["bias"]


def conv_block(w: dict[str, Array], h: Array) -> Array:
    """``max_pool_2x2(gelu(conv3x3_same(h) + bias))`` on NHWC maps, HWIO kernel."""
    act = jax.nn.gelu(conv_same(w, h))
    return jax.lax.reduce_window(act, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def conv_relu_avgpool(w: dict[str, Array], h: Array) -> Array:
    """``avg_pool_2x2(relu(conv3x3_same(h) + bias))``: the CNN's conv block (NHWC, HWIO)."""
    act = jax.nn.relu(conv_same(w, h))
    pooled = jax.lax.reduce_window(act, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return pooled / 4.0


def flatten_relu_dense(w: dict[str, Array], h: Array) -> Array:
    """Flattens ``[B, ...]`` feature maps, then ``relu(dense)``."""
    return jax.nn.relu(flatten_dense(w, h))


def mlp_layers(depth: int) -> list[Layer]:
    """``depth`` tanh hidden layers and a linear output layer."""
    return [tanh_dense] * depth + [dense]


def vgg5_layers(num_convs: int = 4) -> list[Layer]:
    """VGG-5: ``num_convs`` conv blocks and a linear classifier."""
    return [conv_block] * num_convs + [flatten_dense]


def cnn_layers(num_convs: int = 2, num_hidden: int = 1) -> list[Layer]:
    """The CNN: ``num_convs`` conv blocks, ``num_hidden`` relu Dense layers, a Dense."""
    return [conv_relu_avgpool] * num_convs + [flatten_relu_dense] * num_hidden + [dense]


def weights_from_flax(params: Mapping[str, Any], names: Sequence[str]) -> Weights:
    """Copies flax params ``{name: {'kernel', 'bias'}}`` into a list in layer order."""
    return [
        {"kernel": jnp.array(params[n]["kernel"]), "bias": jnp.array(params[n]["bias"])}
        for n in names
    ]


# --- predictive coding ------------------------------------------------------------


def forward(layers: Sequence[Layer], weights: Weights, x: Array) -> list[Array]:
    """The feed-forward pass: ``[mu_1, ..., mu_L]`` with ``v_l = mu_l``."""
    outs = []
    h = x
    for layer, w in zip(layers, weights):
        h = layer(w, h)
        outs.append(h)
    return outs


def energy(
    layers: Sequence[Layer], weights: Weights, x: Array, values: list[Array], y: Array
) -> Array:
    """``F``, summed over the batch, the hidden nodes and the clamped output."""
    inputs = [x, *values]
    targets = [*values, y]
    total = 0.0
    for layer, w, h, v in zip(layers, weights, inputs, targets):
        total = total + 0.5 * jnp.sum(jnp.square(v - layer(w, h)))
    return jnp.asarray(total)


def make_pc_step(
    layers: Sequence[Layer],
    tx: optax.GradientTransformation,
    node_lr: float,
    inference_steps: int,
    *,
    unroll: bool = False,
    energy_trajectory: bool = False,
) -> Step:
    """The PC train step (see the module doc).

    Args:
      layers: the network.
      tx: the weight optimiser, e.g. ``optax.adam(1e-3)``.
      node_lr: SGD learning rate of the nodes.
      inference_steps: ``T``.
      unroll: run the ``T`` node steps as a Python loop (else ``lax.fori_loop``).
      energy_trajectory: also return the batch-mean energy before every node
        step and after the last, ``metrics['energy']`` ``[T + 1]`` (what
        flax_pc's ``train_step`` reports); else only the final energy.
    """

    def step(weights, opt_state, x, y):
        mus = forward(layers, weights, x)

        def node_step(values, _):
            if energy_trajectory:
                e, grads = jax.value_and_grad(energy, argnums=3)(layers, weights, x, values, y)
            else:
                e, grads = None, jax.grad(energy, argnums=3)(layers, weights, x, values, y)
            return [v - node_lr * g for v, g in zip(values, grads)], e

        values, trajectory = mus[:-1], []
        if unroll:
            for _ in range(inference_steps):
                values, e = node_step(values, None)
                trajectory.append(e)
        elif energy_trajectory:
            values, trajectory = jax.lax.scan(node_step, values, None, length=inference_steps)
        else:
            values = jax.lax.fori_loop(
                0, inference_steps, lambda _, v: node_step(v, None)[0], values
            )
        total, grads = jax.value_and_grad(energy, argnums=1)(layers, weights, x, values, y)
        updates, opt_state = tx.update(grads, opt_state, weights)
        batch = x.shape[0]
        metrics = {
            "energy": total / batch,
            "loss": 0.5 * jnp.sum(jnp.square(y - mus[-1])) / batch,
        }
        if energy_trajectory:
            before = jnp.asarray(trajectory, total.dtype)  # a list when unrolled
            metrics["energy"] = jnp.append(before, total) / batch
        return cast(Weights, optax.apply_updates(weights, updates)), opt_state, metrics

    return step


def make_bp_step(layers: Sequence[Layer], tx: optax.GradientTransformation) -> Step:
    """Backprop on the same network: one optax step on the batch-summed squared error."""

    def loss_fn(weights, x, y):
        return 0.5 * jnp.sum(jnp.square(y - forward(layers, weights, x)[-1]))

    def step(weights, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(weights, x, y)
        updates, opt_state = tx.update(grads, opt_state, weights)
        new_weights = cast(Weights, optax.apply_updates(weights, updates))
        return new_weights, opt_state, {"loss": loss / x.shape[0]}

    return step


# --- epochs ----------------------------------------------------------------------


def epoch_batches(rng: Array, num_examples: int, batch_size: int) -> Array:
    """Example indices per batch, ``[N // batch_size, batch_size]``.

    The same order as ``flax_pc.train_epoch(..., shuffle=True)``: the first
    half of ``split(rng)`` permutes the examples and the last partial batch
    is dropped.
    """
    order_key, _ = jax.random.split(rng)
    order = jax.random.permutation(order_key, num_examples)
    num_batches = num_examples // batch_size
    return order[: num_batches * batch_size].reshape(num_batches, batch_size)


def make_epoch(step: Step, batch_size: int) -> Callable[..., tuple[Weights, Any, Any]]:
    """A whole epoch as one ``lax.scan`` over batches gathered from device-resident data.

    Returns ``epoch(weights, opt_state, inputs, targets, rng) -> (weights,
    opt_state, metrics)`` with each metric stacked over the batches.
    """

    def epoch(weights, opt_state, inputs, targets, rng):
        def body(carry, indices):
            weights, opt_state, metrics = step(*carry, inputs[indices], targets[indices])
            return (weights, opt_state), metrics

        batches = epoch_batches(rng, inputs.shape[0], batch_size)
        (weights, opt_state), metrics = jax.lax.scan(body, (weights, opt_state), batches)
        return weights, opt_state, metrics

    return epoch


def predict(layers: Sequence[Layer], weights: Weights, x: Array) -> Array:
    """The network's feed-forward output."""
    return forward(layers, weights, x)[-1]
