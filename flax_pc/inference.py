"""Pure functions of predictive coding: node initialisation, energy, inference.

All functions take the model's ``apply_fn`` (``model.apply``) and its params
explicitly; nothing is stored between calls. ``PCTrainState`` is a thin
wrapper over them, and users who write their own loops call them directly.

Convention: the energy that is minimised is the **total over the batch**,

    F = sum_b [ sum_l pi_l * E_l(v_l^b, mu_l^b) + E_out(y^b, out^b) ],

so ``dF/dv^b`` depends on example ``b`` alone (node dynamics do not depend on
the batch size) and ``dF/dparams`` is the gradient of the batch-summed energy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from flax_pc import energies as _energies
from flax_pc.nodes import _FORWARD_INIT, ENERGIES, NODE_RNG, NODES

Array = jax.Array
PyTree = Any
ApplyFn = Callable[..., Any]
EnergyFn = Callable[[Array, Array], Array]

__all__ = ["Energy", "init_nodes", "energy", "infer", "node_energies"]


class Energy(NamedTuple):
    """The energy of a network at one point (nodes, params), with its parts.

    Attributes:
      total: scalar, the energy summed over the batch, the nodes and the
        output (the quantity whose gradients PC follows).
      per_example: ``[B]``, the total per example.
      nodes: the :data:`~flax_pc.ENERGIES` collection: each ``PCNode``'s
        ``[B]`` energy, as sown (see :func:`node_energies` for a flat dict).
      output: ``[B]``, ``output_energy(targets, output)``.
      output_prediction: the model's output, ``[B, *out_features]``.
    """

    total: Array
    per_example: Array
    nodes: PyTree
    output: Array
    output_prediction: Array


def init_nodes(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: Array,
    *,
    rng: Array | None = None,
) -> PyTree:
    """Initialises the value nodes for one batch by a forward pass.

    Each ``PCNode`` makes its value from its prediction as its ``init`` says
    (``'forward'``: ``v = mu``, so every hidden energy is zero).

    Args:
      apply_fn: the model's ``apply``.
      params: the model's params.
      inputs: a batch of inputs, ``[B, ...]``.
      rng: PRNG key for nodes with ``init='normal'`` (RNG stream ``'pc_nodes'``).

    Returns:
      The :data:`~flax_pc.NODES` collection (``{}`` for a model without nodes).
    """
    return _init_nodes(apply_fn, params, inputs, rng)[0]


def _init_nodes(apply_fn, params, inputs, rng) -> tuple[PyTree, bool]:
    """``init_nodes``, and whether every node was forward initialised."""
    rngs = None if rng is None else {NODE_RNG: rng}
    _, variables = apply_fn({"params": params}, inputs, mutable=[NODES, _FORWARD_INIT], rngs=rngs)
    flags = jax.tree_util.tree_leaves(variables.get(_FORWARD_INIT, {}))
    return variables.get(NODES, {}), all(flags)


def _check_targets(targets: Array, output: Array) -> None:
    if not hasattr(output, "shape"):
        raise TypeError(
            f"The model returned {type(output).__name__}; flax_pc needs the model to return "
            "one array, the output layer's prediction."
        )
    if targets.shape != output.shape:
        hint = ""
        if targets.ndim == output.ndim - 1 and jnp.issubdtype(targets.dtype, jnp.integer):
            hint = (
                f" Integer labels must be one-hot encoded first: "
                f"jax.nn.one_hot(labels, {output.shape[-1]})."
            )
        raise ValueError(
            f"targets have shape {tuple(targets.shape)} but the model output has shape "
            f"{tuple(output.shape)}; they must match.{hint}"
        )


def energy(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: Array,
    targets: Array,
    *,
    output_energy: EnergyFn = _energies.squared_error,
) -> Energy:
    """Computes the energy of the network with its nodes at ``nodes``.

    ``F = sum_b [ sum_l pi_l E_l(v_l, mu_l) + output_energy(targets, out) ]``
    (summed over the batch; see the module doc). The output node is clamped to
    ``targets``: that is the same as adding ``output_energy``.

    Args:
      apply_fn: the model's ``apply``.
      params: the model's params.
      nodes: the :data:`~flax_pc.NODES` collection, from :func:`init_nodes`.
      inputs: ``[B, ...]``.
      targets: ``[B, *out_features]``, the same shape as the model output.
      output_energy: ``energy(targets, output) -> [B]``.

    Returns:
      An :class:`Energy`.
    """
    variables = {"params": params, NODES: nodes} if nodes else {"params": params}
    output, state = apply_fn(variables, inputs, mutable=[ENERGIES])
    _check_targets(targets, output)
    sown = state.get(ENERGIES, {})
    out_energy = output_energy(targets, output)
    per_example = out_energy
    for leaf in jax.tree_util.tree_leaves(sown):
        per_example = per_example + leaf
    return Energy(
        total=jnp.sum(per_example),
        per_example=per_example,
        nodes=sown,
        output=out_energy,
        output_prediction=output,
    )


def node_energies(sown: PyTree) -> dict[str, Array]:
    """Flattens the sown :data:`~flax_pc.ENERGIES` collection to ``{path: [B]}``.

    ``path`` is the node's module path, e.g. ``'PCNode_0'`` or
    ``'Block_1/PCNode_0'``.
    """
    flat = traverse_util.flatten_dict(sown, sep="/")
    result = {}
    for path, leaf in flat.items():
        name = path[: -len("/energy")] if path.endswith("/energy") else path
        leaves = leaf if isinstance(leaf, tuple) else (leaf,)
        result[name] = sum(leaves[1:], leaves[0])
    return result


def _total_energy(apply_fn, inputs, targets, output_energy):
    """``(params, nodes) -> (F, Energy)``: the function whose gradients PC follows."""

    def total(params, nodes):
        result = energy(apply_fn, params, nodes, inputs, targets, output_energy=output_energy)
        return result.total, result

    return total


def _check_steps(inference_steps: Any) -> int:
    if isinstance(inference_steps, bool) or not isinstance(inference_steps, int):
        raise TypeError(
            f"inference_steps must be a Python int >= 0, got {inference_steps!r} "
            f"({type(inference_steps).__name__})."
        )
    if inference_steps < 0:
        raise ValueError(f"inference_steps must be >= 0, got {inference_steps}.")
    return inference_steps


def _check_transform(tx: Any, name: str) -> None:
    if not (hasattr(tx, "init") and hasattr(tx, "update") and callable(tx.update)):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation (e.g. optax.sgd(0.01)), "
            f"got {type(tx).__name__}."
        )


def infer(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: Array,
    targets: Array,
    *,
    node_tx: optax.GradientTransformation,
    inference_steps: int,
    output_energy: EnergyFn = _energies.squared_error,
) -> tuple[PyTree, Energy]:
    """Runs ``inference_steps`` steps of ``node_tx`` on the nodes.

    Each step takes ``g = dF/dnodes`` (``F`` summed over the batch, so ``g`` is
    per example) at the current nodes and applies ``node_tx``'s update. The
    optimiser state starts from ``node_tx.init(nodes)``. The steps run as one
    ``lax.scan``: the loop is compiled once, whatever ``inference_steps`` is.

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy: as in :func:`energy`.
      node_tx: an optax transform for the nodes, e.g. ``optax.sgd(0.01)``.
      inference_steps: ``T >= 0``, a Python int.

    Returns:
      ``(nodes, energies)``: the nodes after ``T`` steps, and the
      :class:`Energy` *before* each step, stacked (leading axis ``T``).
    """
    inference_steps = _check_steps(inference_steps)
    _check_transform(node_tx, "node_tx")
    final_nodes, _, energies = _infer(
        apply_fn, params, nodes, inputs, targets, node_tx, inference_steps, output_energy
    )
    return final_nodes, energies


def _infer(
    apply_fn,
    params,
    nodes,
    inputs,
    targets,
    node_tx,
    inference_steps,
    output_energy,
    forward_initialised=False,
):
    """``infer`` without the argument checks; also returns the optimiser state.

    With ``forward_initialised`` (every node holds its prediction), the first
    step uses that every hidden error ``e_l = v_l - mu_l`` is zero: then
    ``dF/dv = d output_energy / dv``, which only reaches the last hidden node,
    so the first step costs one backward pass through the output layer instead
    of a forward and a backward pass through the whole network.
    """

    def total(nodes):
        return _total_energy(apply_fn, inputs, targets, output_energy)(params, nodes)

    def step(carry, _):
        nodes, opt_state = carry
        grads, result = jax.grad(total, has_aux=True)(nodes)
        updates, opt_state = node_tx.update(grads, opt_state, nodes)
        return (optax.apply_updates(nodes, updates), opt_state), result

    opt_state = node_tx.init(nodes)
    if inference_steps == 0:
        # Shapes of the (empty) energy trajectory without running a step.
        shapes = jax.eval_shape(lambda n: total(n)[1], nodes)
        empty = jax.tree_util.tree_map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)
        return nodes, opt_state, empty
    if not forward_initialised:
        (nodes, opt_state), energies = jax.lax.scan(
            step, (nodes, opt_state), None, length=inference_steps
        )
        return nodes, opt_state, energies

    def output_total(nodes):
        output = apply_fn({"params": params, NODES: nodes}, inputs)
        per_example = output_energy(targets, output)
        return jnp.sum(per_example), (per_example, output)

    grads, (per_example, output) = jax.grad(output_total, has_aux=True)(nodes)
    updates, opt_state = node_tx.update(grads, opt_state, nodes)
    nodes = optax.apply_updates(nodes, updates)
    (nodes, opt_state), rest = jax.lax.scan(
        step, (nodes, opt_state), None, length=inference_steps - 1
    )
    first = Energy(
        total=jnp.sum(per_example),
        per_example=per_example,
        nodes=jax.tree_util.tree_map(lambda e: jnp.zeros(e.shape[1:], e.dtype), rest.nodes),
        output=per_example,
        output_prediction=output,
    )
    energies = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return nodes, opt_state, energies
