"""The diagnostics of :mod:`flax_pc.diagnostics` (see its module doc)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from flax_pc import energies as _energies
from flax_pc._src import network_energy, train_state
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

if TYPE_CHECKING:
    from flax_pc._src.train_state import PCTrainState

__all__ = [
    "GradientAlignment",
    "activity_hessian",
    "energy_ratio",
    "gradient_alignment",
    "hessian_condition_number",
    "layer_energies",
]


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


class GradientAlignment(NamedTuple):
    """How a batch's PC weight gradient compares with backprop's on the same batch.

    Attributes:
      cosine: ``{param path: cosine similarity}`` (``'Dense_0/kernel'``, ...), in
        ``[-1, 1]``; ``nan`` where backprop's gradient is zero.
      norm_ratio: ``{param path: |PC gradient| / |backprop gradient|}``: how much
        of the error signal reached the parameter (``nan`` where backprop's is zero).
      total: the cosine over all params at once, a scalar.
    """

    cosine: dict[str, Array]
    norm_ratio: dict[str, Array]
    total: Array


def gradient_alignment(
    state: PCTrainState, inputs: PyTree, targets: PyTree, rng: RNG | None = None
) -> GradientAlignment:
    """PC's weight gradient of one batch against backprop's, parameter by parameter.

    The PC gradient is the one ``state.train_step(inputs, targets, rng)`` would
    apply (``algorithm='pc'``: the weight gradient at the nodes after
    inference, times ``1 / beta`` under nudging); backprop's is that of the
    same ``state`` with ``algorithm='bp'`` (the output energy of the
    feed-forward pass). Where the two point apart, PC does not train the
    network as backprop would: a node step so small that the error signal
    fades before it reaches the first layers (``norm_ratio`` far below 1),
    or one so large that the nodes settle far from the feed-forward values.

    Args:
      state: a :class:`~flax_pc.PCTrainState` with ``algorithm='pc'``.
      inputs, targets, rng: as in ``train_step``.

    Raises:
      ValueError: for ``algorithm='ipc'`` (a weight step per inference step: no
        one gradient) or ``'bp'`` (nothing to compare).
    """
    if state.algorithm != "pc":
        raise ValueError(
            f"gradient_alignment compares algorithm='pc' with backprop; the state has "
            f"algorithm={state.algorithm!r}."
        )
    rngs = as_rngs(rng, step=state.step)
    pc, bp = _both_gradients(state, inputs, targets, rngs)
    pc_flat, bp_flat = _flat(pc), _flat(bp)
    cosine, norm_ratio = {}, {}
    for path in sorted(bp_flat, key=_natural_key):
        a, b = jnp.ravel(pc_flat[path]), jnp.ravel(bp_flat[path])
        cosine[path] = _cosine(a, b)
        norm_b = jnp.linalg.norm(b)
        norm_ratio[path] = jnp.where(norm_b == 0, jnp.nan, jnp.linalg.norm(a) / norm_b)
    total = _cosine(ravel_pytree(pc)[0], ravel_pytree(bp)[0])
    return GradientAlignment(cosine, norm_ratio, total)


@jax.jit
def _both_gradients(state: PCTrainState, inputs: PyTree, targets: PyTree, rngs: Any):
    pc = train_state.step_gradient(state, inputs, targets, rngs)[0]
    bp = train_state.step_gradient(state.replace(algorithm="bp"), inputs, targets, rngs)[0]
    return pc, bp


def _flat(tree: PyTree) -> dict[str, Array]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf for path, leaf in leaves}


def _cosine(a: Array, b: Array) -> Array:
    norms = jnp.linalg.norm(a) * jnp.linalg.norm(b)
    return jnp.where(norms == 0, jnp.nan, jnp.vdot(a, b) / jnp.where(norms == 0, 1.0, norms))
