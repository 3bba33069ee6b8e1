"""The diagnostics of :mod:`flax_pc.diagnostics` (see its module doc)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from flax_pc import energies as _energies
from flax_pc._src import network_energy
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["activity_hessian", "energy_ratio", "hessian_condition_number", "layer_energies"]


def _natural_key(path: str) -> list[Any]:
    # 'Block_10/PCNode_0' after 'Block_9/PCNode_0': numbers compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def layer_energies(sown: PyTree) -> dict[str, Array]:
    """Each node's energy per example, ``{path: [B]}``, from the input side to the output.

    Like :func:`flax_pc.node_energies`, ordered by the nodes' module paths with
    numbers compared as numbers (``PCNode_2`` before ``PCNode_10``): for the
    auto-numbered names linen gives (``PCNode_0``, ``Block_3``), the order in
    which the model creates them. Name explicitly named nodes so that they sort.

    Args:
      sown: the :data:`~flax_pc.ENERGIES` collection (``Energy.nodes``), or
        ``train_step``'s ``metrics['node_energies']`` (``{path: scalar}``).
    """
    flat = network_energy.node_energies(sown)
    return {path: flat[path] for path in sorted(flat, key=_natural_key)}


def energy_ratio(sown: PyTree) -> Array:
    """The first layer's energy over the last layer's (batch means), a scalar.

    A value far below 1 means the error signal has not reached the first layers
    (it fades with depth, or inference has not run long enough); ``nan`` when
    the last layer's energy is zero.

    Args:
      sown: the :data:`~flax_pc.ENERGIES` collection (``Energy.nodes``), or
        ``train_step``'s ``metrics['node_energies']``, of a model with at
        least one ``PCNode``.
    """
    layers = list(layer_energies(sown).values())
    if not layers:
        raise ValueError("energy_ratio needs the energies of a model with at least one PCNode.")
    first, last = jnp.mean(layers[0]), jnp.mean(layers[-1])
    return jnp.where(last == 0, jnp.nan, first / jnp.where(last == 0, 1.0, last))


def activity_hessian(
    apply_fn: ApplyFn, params: PyTree, nodes: PyTree, inputs: PyTree, targets: PyTree, *,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None, rng: RNG | None = None,
) -> Array:  # fmt: skip
    """The Hessian of the total energy with respect to every node entry, ``[n, n]``.

    ``n`` is the number of node entries of the batch (the nodes raveled in
    ``jax.flatten_util.ravel_pytree``'s order). Examples do not interact, so
    the matrix is block diagonal over the batch; pass one example to see one
    block. It is dense: meant for small networks (``n`` in the thousands at most).

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy, model_state, rng:
        as in :func:`flax_pc.energy`.
    """
    flat, unravel = ravel_pytree(nodes)
    if flat.size == 0:
        raise ValueError("activity_hessian needs a model with at least one PCNode.")
    total = network_energy.energy_of_nodes(
        apply_fn, params, inputs, targets,
        output_energy=output_energy, model_state=model_state, rng=rng,
    )  # fmt: skip
    return jax.hessian(lambda flat_nodes: total(unravel(flat_nodes))[0])(flat)


def hessian_condition_number(hessian: Array) -> Array:
    """``|lambda|_max / |lambda|_min`` of a symmetric matrix (e.g. :func:`activity_hessian`).

    ``inf`` for a singular matrix.
    """
    magnitudes = jnp.abs(jnp.linalg.eigvalsh(hessian))
    return jnp.max(magnitudes) / jnp.min(magnitudes)
