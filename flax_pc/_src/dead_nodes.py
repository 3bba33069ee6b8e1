"""No node that cannot change the output energy, silently.

A value node whose value reaches nothing the output energy reads (a node on a
probe, a second head's input, an extra output that ``output_energy`` leaves
out, a branch the model discards) cannot change the output energy; yet its own
energy, ``E(v, mu)``, pulls its prediction ``mu``, and so the nodes and the
weights before it, towards its value: it holds them back, and the weight step
is not the one of the model the energy describes.

:func:`dead_nodes` finds such nodes from the data flow of one trace of the
energy (``jax.make_jaxpr``, no compile), the nodes' values its inputs:

- a node is *live* when its value reaches the output energy, or an energy
  sown by anything but a node (an :class:`~flax_pc.EnergyTerm`), or the energy
  of another live node (through that node's prediction);
- every other node is *dead*.

A ``scan`` is followed inside (its carry to a fixed point), a call-like
equation too; any other equation with a sub-program (``while``, ``cond``) is
taken as a whole, which may call a node live that is not, never the reverse.
:func:`warn_dead_nodes` warns once, naming the nodes and the fix.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import jax

from flax_pc._src import auto_nodes, data_flow, user_warnings
from flax_pc._src.types import PyTree

_NODE_LEAVES = ("value", "error")  # the variable a node keeps, under its path
_MAX_NAMED = 8  # node paths named in the warning, before "and N more"
# The messages already given, per apply_fn (a retrace warns no second time).
_warned: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_warned_unhashable: set[str] = set()


def _key_name(key: Any) -> str:
    for field in ("key", "name", "idx"):
        if hasattr(key, field):
            return str(getattr(key, field))
    return str(key)


def _node_path(path: tuple[Any, ...]) -> str:
    """``'Dense_1/input'`` from the key path of a node's leaf (``.../value``)."""
    names = [_key_name(key) for key in path]
    if names and names[-1] in _NODE_LEAVES:
        names = names[:-1]
    return "/".join(names)


def _energy_path(path: tuple[Any, ...]) -> str:
    """``'Dense_1/input'`` from the key path of a sown energy (``.../energy/0``)."""
    names = [_key_name(key) for key in path]
    if "energy" in names:
        names = names[: len(names) - 1 - names[::-1].index("energy")]
    return "/".join(names)


def dead_nodes(energy_of_nodes: Callable[[PyTree], Any], nodes: PyTree) -> list[str]:
    """The paths of the nodes whose value cannot change the output energy.

    Traces ``energy_of_nodes`` once (``jax.make_jaxpr``; it may close over
    tracers, e.g. inside ``jax.jit``); nothing is compiled or run.

    Args:
      energy_of_nodes: ``nodes -> energy``, where ``energy`` has the
        attributes ``output`` (the output energy, ``[B]``) and ``nodes`` (the
        sown :data:`~flax_pc.ENERGIES`), as a :class:`~flax_pc.Energy`: e.g.
        ``lambda nodes: fpc.energy(apply_fn, params, nodes, x, y, output_energy=...)``.
      nodes: the :data:`~flax_pc.NODES` collection (arrays or ShapeDtypeStructs).

    Returns:
      The dead nodes' paths (``'probe/input'``, ``'Block_0/PCNode_1'``), in
      the order of ``nodes``; ``[]`` when every node can change the output energy.
    """
    flat, node_def = jax.tree_util.tree_flatten_with_path(nodes)
    if not flat:
        return []
    paths = [_node_path(path) for path, _ in flat]
    names = list(dict.fromkeys(paths))
    bit = {name: 1 << i for i, name in enumerate(names)}
    sown_paths: list[str] = []

    def traced(leaves: list[Any]) -> tuple[Any, list[Any]]:
        result = energy_of_nodes(jax.tree_util.tree_unflatten(node_def, leaves))
        sown = jax.tree_util.tree_flatten_with_path(result.nodes)[0]
        sown_paths[:] = [_energy_path(path) for path, _ in sown]
        return result.output, [leaf for _, leaf in sown]

    abstract = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for _, leaf in flat]
    jaxpr = jax.make_jaxpr(traced)(abstract).jaxpr
    seeds = {var: bit[path] for var, path in zip(jaxpr.invars, paths)}
    masks = data_flow.forward_masks(jaxpr, seeds)
    out_vars = list(jaxpr.outvars)
    num_output = len(out_vars) - len(sown_paths)

    def reached(var: Any) -> int:
        return masks.get(var, 0) if data_flow.is_var(var) else 0

    live = 0
    for var in out_vars[:num_output]:
        live |= reached(var)
    own: dict[str, int] = {}  # a node's path -> the nodes its energy reads
    for var, path in zip(out_vars[num_output:], sown_paths):
        if path in bit:
            own[path] = own.get(path, 0) | reached(var)
        else:  # an energy no node owns (an EnergyTerm): what it reads counts
            live |= reached(var)
    grown = True
    while grown:  # the nodes whose predictions a live node's energy reads
        grown = False
        for path, mask in own.items():
            if live & bit[path] and (mask | live) != live:
                live, grown = live | mask, True
    return [name for name in names if not live & bit[name]]


def _is_with_nodes_node(path: str) -> bool:
    last = path.rsplit("/", 1)[-1]
    return last == "input" or (last.startswith("input_") and last[len("input_") :].isdigit())


def dead_nodes_message(dead: list[str], *, with_nodes: bool) -> str:
    """The warning for the nodes ``dead`` (see :func:`dead_nodes`)."""
    shown = ", ".join(dead[:_MAX_NAMED])
    if len(dead) > _MAX_NAMED:
        shown += f" and {len(dead) - _MAX_NAMED} more"
    one = len(dead) == 1
    placed = [path for path in dead if with_nodes and _is_with_nodes_node(path)]
    written = [path for path in dead if path not in placed]
    fixes = []
    if placed:
        fixes.append(
            f"{'it was' if one else 'those named <layer>/input were'} placed by fpc.with_nodes; "
            "tell it which part of the model's output the energy reads, "
            "fpc.with_nodes(model.apply, output=lambda out: out[0]) (the selection "
            "output_energy makes), and it places no node where only the rest depends on it"
        )
    if written:
        fixes.append(
            f"remove the hand-written PCNode{'' if len(written) == 1 else 's'} "
            f"{', '.join(written[:_MAX_NAMED])}, or make output_energy read the output "
            f"{'it feeds' if len(written) == 1 else 'they feed'}"
        )
    return (
        f"The value node{'' if one else 's'} {shown} cannot change the output energy: "
        f"nothing that output_energy reads depends on {'its value' if one else 'their values'} "
        f"({'it feeds' if one else 'they feed'} only outputs the energy leaves out, or "
        "nothing), yet "
        f"{'its' if one else 'their'} energy pulls the nodes and weights before "
        f"{'it' if one else 'them'} towards {'its' if one else 'their'} value and holds "
        "their training back. Fix: " + "; or ".join(fixes) + "."
    )


def warn_dead_nodes(
    energy_of_nodes: Callable[[PyTree], Any], nodes: PyTree, *, apply_fn: Any = None
) -> list[str]:
    """Warns (once per ``apply_fn`` and message) if a node cannot change the output energy.

    For ``train_step``'s trace: ``energy_of_nodes`` and ``nodes`` as in
    :func:`dead_nodes`; ``apply_fn`` is the model's (its nodes placed by
    :func:`~flax_pc.with_nodes` or not, which the fix in the message follows).

    Returns:
      The dead nodes' paths.
    """
    dead = dead_nodes(energy_of_nodes, nodes)
    if not dead:
        return dead
    message = dead_nodes_message(dead, with_nodes=auto_nodes.is_with_nodes(apply_fn))
    try:
        given = _warned.setdefault(apply_fn, set())
    except TypeError:  # None, or an apply_fn without weak references
        given = _warned_unhashable
    if message not in given:
        given.add(message)
        user_warnings.warn(message)
    return dead
