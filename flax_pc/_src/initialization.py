"""Node initialisation: a batch's value nodes, made by a forward pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
from flax.core import meta

from flax_pc._src import lost_nodes, node_rules
from flax_pc._src.model_calls import apply_model, check_model_state
from flax_pc._src.node_rules import NewLatent
from flax_pc._src.nodes import ENERGIES, NODES, NOISE
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, PyTree

__all__ = ["init_nodes"]


class InitialNodes(NamedTuple):
    """What :func:`initialize` returns.

    Attributes:
      nodes: the :data:`~flax_pc.NODES` collection.
      forward: ``True`` when every node was forward initialised (holds its
        prediction), so every hidden error starts at zero; pass it to
        the internal ``run_inference``, which then skips the first step's
        forward pass.
    """

    nodes: PyTree
    forward: bool


def initialize(
    apply_fn: ApplyFn, params: PyTree, inputs: PyTree, *,
    model_state: Mapping[str, PyTree] | None = None, rng: RNG | None = None,
) -> InitialNodes:  # fmt: skip
    """:func:`init_nodes`, and whether every node was forward initialised.

    The linen and the NNX path (``fpc.nnx.init_nodes``, ``fpc.nnx.train_step``)
    both initialise their nodes here. One pass makes every latent; a node
    with ``value_init='normal'`` leaves a placeholder that asks for a draw. If
    any does, its value is drawn here by one rule
    (:func:`~flax_pc._src.node_rules.draw`: from the :data:`~flax_pc.NOISE` key
    and the latent's path in the :data:`~flax_pc.NODES` collection) and a second
    pass, given the drawn values, makes the latents from them, so that the
    layers above start from them.

    Raises if a ``PCNode`` sits in a lifted transform that would drop its value
    (see :func:`~flax_pc._src.lost_nodes.no_node_lost`), or if a value is to be
    drawn and ``rng`` gives no :data:`~flax_pc.NOISE` key.
    """
    rngs = as_rngs(rng)
    model_state = check_model_state(model_state)

    def new_nodes(drawn: PyTree) -> PyTree:
        # ENERGIES mutable too: a transform that does not carry it shows it here.
        _, collections = apply_model(
            apply_fn, params, inputs, nodes=drawn, model_state=model_state, rngs=rngs,
            mutable=[NODES, ENERGIES],
        )  # fmt: skip
        return collections.get(NODES, {})

    with lost_nodes.no_node_lost():
        boxed = new_nodes(None)
        drawn = node_rules.drawn_values(boxed, rngs, NOISE)
        if drawn is not None:
            boxed = new_nodes(drawn)
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda leaf: isinstance(leaf, NewLatent))
    forward = bool(leaves) and all(isinstance(v, NewLatent) and v.forward for v in leaves)
    return InitialNodes(meta.unbox(boxed), forward)


def init_nodes(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    *,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> PyTree:
    """Initialises the value nodes for one batch by a forward pass.

    Each ``PCNode`` makes its value from its prediction as its ``value_init``
    says (``'forward'``: ``v = mu``, so every hidden energy is zero;
    ``'normal'``: ``v ~ N(0, value_init_stddev^2)``, drawn from the
    :data:`~flax_pc.NOISE` key of ``rng`` and the latent's path in the
    :data:`~flax_pc.NODES` collection, so an NNX model with its nodes at the
    same paths draws the same values).

    Args:
      apply_fn: the model's ``apply``.
      params: the model's params.
      inputs: a batch of inputs, ``[B, ...]``, or any pytree of such arrays
        (the model's one input argument).
      model_state: the model's other collections, e.g. ``{'batch_stats': ...}``.
      rng: a key, an int seed or ``{stream: key}``, for nodes with
        ``value_init='normal'`` (stream :data:`~flax_pc.NOISE`) and for dropout.

    Returns:
      The :data:`~flax_pc.NODES` collection (``{}`` for a model without nodes).
    """
    return initialize(apply_fn, params, inputs, model_state=model_state, rng=rng).nodes
