"""The energy of a network: the output energy plus what every node sows, per example.

Convention: the energy that is minimised is the **total over the batch**,

    F = sum_b [ sum_l pi_l * E_l(v_l^b, mu_l^b) + E_out(y^b, out^b) ],

so ``dF/dv^b`` depends on example ``b`` alone (node dynamics do not depend on
the batch size) and ``dF/dparams`` is the gradient of the batch-summed energy.

Models with state and randomness: every function takes ``model_state`` (the
model's non-param collections, e.g. ``{'batch_stats': ...}``; the model may
update them in the call, and those updates are discarded here) and ``rng`` (a
key, which feeds :data:`~flax_pc.NOISE` and ``'dropout'``, or a dict ``{stream: key}``).
Passing the same ``rng`` to every call of one batch gives every call the same
dropout mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from flax_pc import energies as _energies
from flax_pc._src import batches
from flax_pc._src.model_calls import apply_model, check_model_state
from flax_pc._src.nodes import ENERGIES, StackedEnergy
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["Energy", "energy", "node_energies"]


class Energy(NamedTuple):
    """The energy of a network at one point (nodes, params), with its parts.

    Attributes:
      total: scalar, the energy summed over the batch, the nodes and the
        output (the quantity whose gradients PC follows).
      per_example: ``[B]``, the total per example.
      nodes: the :data:`~flax_pc.ENERGIES` collection: each ``PCNode``'s
        ``[B]`` energy (``[*stacked, B]``, batch axis last, for a node in
        ``nn.scan``/``nn.vmap``), as sown (see :func:`node_energies` for a flat dict).
      output: ``[B]``, ``output_energy(targets, output)``.
      output_prediction: the model's output, ``[B, *out_features]`` (any
        pytree the model returns).
    """

    total: Array
    per_example: Array
    nodes: PyTree
    output: Array
    output_prediction: PyTree


#: The energies of :mod:`flax_pc.energies` that compare two arrays of one shape.
BUILT_IN_ENERGIES = (_energies.squared_error, _energies.cross_entropy, _energies.bernoulli)


def check_targets(targets: PyTree, output: Any) -> None:
    """Raises unless ``targets`` and the model's ``output`` are arrays of one shape.

    The check of the built-in output energies; a custom ``output_energy``
    receives targets and output as they are.
    """
    for name, value in (("model returned", output), ("targets are", targets)):
        if not hasattr(value, "shape"):
            raise TypeError(
                f"The {name} a {batches.describe(value)}, but the built-in output energies "
                "compare one output array with one target array. Pass an output_energy that "
                "picks them by the output's structure, e.g. output_energy=lambda targets, "
                "output: fpc.energies.cross_entropy(targets, output[0]) for a model that "
                "returns the tuple (logits, extras)."
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


def output_energy_of(
    output_energy: OutputEnergyFn, targets: PyTree, output: Any, batch_size: int
) -> Array:
    """``output_energy(targets, output)``, ``[B]``, checked.

    The built-in energies first check that targets and output are arrays of
    one shape (:func:`check_targets`); any energy must return ``[B]``.
    """
    if output_energy in BUILT_IN_ENERGIES:
        check_targets(targets, output)
    per_example = output_energy(targets, output)
    if jnp.shape(per_example) != (batch_size,):
        raise ValueError(
            f"output_energy(targets, output) returned shape {tuple(jnp.shape(per_example))}; "
            f"it must return one energy per example, [B] = [{batch_size}] (sum over the "
            "output's features)."
        )
    return per_example


def _per_example(leaf: Array, batch_size: int, path: str) -> Array:
    """A sown energy ``[*stacked, B]`` (batch axis last) summed over its stacked axes: ``[B]``."""
    if leaf.ndim == 1 and leaf.shape[0] == batch_size:
        return leaf
    if leaf.ndim == 0 or leaf.shape[-1] != batch_size:
        raise ValueError(
            f"The energy sown by the PCNode at {path} has shape {tuple(leaf.shape)}, with "
            f"{leaf.shape[-1] if leaf.ndim else 'no'} entries on its batch axis; the batch "
            f"has {batch_size} examples. (Its energy function must return [B]; an energy "
            "sown outside a PCNode is not flax_pc's.)"
        )
    return jnp.sum(leaf.reshape(-1, batch_size), axis=0)


def batch_last(sown: PyTree) -> PyTree:
    """The sown :data:`~flax_pc.ENERGIES` with each node's batch axis last: ``[*stacked, B]``.

    Energies sown inside a lifted transform come boxed with the position of
    their batch axis (``StackedEnergy``); the others are ``[B]`` already.
    """
    return jax.tree_util.tree_map(
        lambda leaf: leaf.batch_last() if isinstance(leaf, StackedEnergy) else leaf,
        sown,
        is_leaf=lambda leaf: isinstance(leaf, StackedEnergy),
    )


def energy(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> Energy:
    """Computes the energy of the network with its nodes at ``nodes``.

    ``F = sum_b [ sum_l pi_l E_l(v_l, mu_l) + output_energy(targets, out) ]``
    (summed over the batch; see the module doc). The output node is clamped to
    ``targets``: that is the same as adding ``output_energy``. A node stacked
    by a lifted transform contributes its energy summed over the stack.

    Args:
      apply_fn: the model's ``apply``.
      params: the model's params.
      nodes: the :data:`~flax_pc.NODES` collection, from :func:`init_nodes`.
      inputs: ``[B, ...]``, or any pytree of arrays sharing the leading batch
        axis ``B`` (the model's one input argument: a tuple, a dict).
      targets: ``[B, *out_features]``, the shape of the model output (for the
        built-in energies), or any pytree ``output_energy`` takes.
      output_energy: ``energy(targets, output) -> [B]``; a custom one receives
        targets and the model's output as they are (e.g. ``lambda y, out:
        fpc.energies.cross_entropy(y, out[0])`` for a model returning the tuple
        ``(logits, extras)``; on a model returning one array ``out[0]`` would
        be the first example, which the built-in energies refuse).
      model_state: the model's other collections (their updates are discarded).
      rng: a key (or int seed) or ``{stream: key}`` for the model's random layers (dropout).

    Returns:
      An :class:`Energy`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> x, y = jnp.ones((3, 4)), jnp.zeros((3, 2))
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, fpc.PCNode(), nn.Dense(2)])
      >>> variables = model.init(jax.random.key(0), x)
      >>> nodes = fpc.init_nodes(model.apply, variables["params"], x)
      >>> e = fpc.energy(model.apply, variables["params"], nodes, x, y)
      >>> e.per_example.shape
      (3,)
      >>> bool(jnp.allclose(e.total, e.output.sum()))  # forward init: no hidden error
      True
    """
    batch_size = batches.check_batch(inputs, targets)
    output, collections = apply_model(
        apply_fn, params, inputs, nodes=nodes, model_state=check_model_state(model_state),
        rngs=as_rngs(rng), mutable=[ENERGIES],
    )  # fmt: skip
    sown = batch_last(collections.get(ENERGIES, {}))
    out_energy = output_energy_of(output_energy, targets, output, batch_size)
    per_example = out_energy
    for path, leaf in _flat_energies(sown).items():
        per_example = per_example + _per_example(leaf, batch_size, path)
    return Energy(
        total=jnp.sum(per_example),
        per_example=per_example,
        nodes=sown,
        output=out_energy,
        output_prediction=output,
    )


def _flat_energies(sown: PyTree) -> dict[str, Array]:
    """``{node path: sown energy}``; a node sows one value per pass."""
    flat = traverse_util.flatten_dict(sown, sep="/")
    result = {}
    for path, leaf in flat.items():
        name = path[: -len("/energy")] if path.endswith("/energy") else path
        for index, value in enumerate(leaf if isinstance(leaf, tuple) else (leaf,)):
            result[name if index == 0 else f"{name}#{index}"] = value
    return result


def node_energies(sown: PyTree) -> dict[str, Array]:
    """Flattens the sown :data:`~flax_pc.ENERGIES` collection to ``{path: [B]}``.

    ``path`` is the node's module path, e.g. ``'PCNode_0'`` or
    ``'Block_1/PCNode_0'``. A node stacked by ``nn.scan``/``nn.vmap`` (energy
    ``[L, B]``, or ``[B, T]`` for ``nn.RNN``'s time axis) is summed over its stack.
    """
    return {
        path: leaf if leaf.ndim <= 1 else jnp.sum(leaf.reshape(-1, leaf.shape[-1]), axis=0)
        for path, leaf in _flat_energies(batch_last(sown)).items()
    }


def energy_of_nodes(
    apply_fn: ApplyFn, params: PyTree, inputs: PyTree, targets: PyTree, *,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None, rng: RNG | None = None,
) -> Callable[[PyTree], tuple[Array, Energy]]:  # fmt: skip
    """:func:`energy` as a function of the nodes alone: ``nodes -> (F, Energy)``.

    What inference differentiates (``jax.grad(..., has_aux=True)``); the
    arguments are those of :func:`energy`.
    """
    model_state = check_model_state(model_state)
    rngs = as_rngs(rng)

    def total(nodes: PyTree) -> tuple[Array, Energy]:
        result = energy(
            apply_fn, params, nodes, inputs, targets,
            output_energy=output_energy, model_state=model_state, rng=rngs,
        )  # fmt: skip
        return result.total, result

    return total


def only_node_energies(total: Callable[[PyTree], tuple[Array, Energy]], nodes: PyTree) -> bool:
    """Whether every energy the model sows belongs to a node of ``nodes``.

    An energy sown by anything else (an :class:`~flax_pc.EnergyTerm`, or a
    module of the user's) need not be zero at a forward initialisation, so
    the first-step shortcut of :func:`run_inference` would be wrong there.
    ``total`` is :func:`energy_of_nodes`; it is traced for shapes only.
    """
    sown = jax.eval_shape(lambda nodes: total(nodes)[1].nodes, nodes)
    # Keys joined as str: an NNX model's node paths hold ints (``nodes/0``).
    node_paths = {"/".join(map(str, key[:-1])) for key in traverse_util.flatten_dict(nodes)}
    return set(_flat_energies(sown)) <= node_paths
