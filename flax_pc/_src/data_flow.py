"""Where ``with_nodes`` puts value nodes: the data flow of one trace of the model.

One discovery trace per input structure: ``jax.make_jaxpr`` of the model's
``apply`` under ``nn.intercept_methods``, recording every call of a listed
layer (its input and its output), with the model's params as the trace's
first inputs. In the resulting jaxpr:

- an activation *depends on the params* when a params input reaches it
  (forward through the equations);
- a layer's result *reaches the output* when the part of the model's output
  that the output energy reads needs it (backward from that output), or a
  hand-written node's or term's energy does;
- two layer calls read *the same activation* when their inputs are one
  variable of the jaxpr (attention's query, key and value projections read
  one ``inputs_q``).

**Hand-written nodes.** A model that has ``PCNode`` modules of its own gets a
second trace, with those nodes' values given as inputs of the trace (as in an
energy pass): a node's value then depends on the params no longer, so an
activation that is a node's value, or a function of node values and the data
alone, does not depend on the params and gets no second node; and each node's
energy (which reads its prediction) is an output the layers before it reach.

A call-like equation (``jit``, ``custom_jvp_call``, ``remat``, ...) and a
``scan`` are followed inside (a scan's carry to a fixed point); any other
equation with a sub-program (``while``, ``cond``) is taken as a whole: each of
its results depends on each of its inputs, which may say "depends" or
"reaches" where the data does not, never the reverse.

Layers called inside a lifted transform (``nn.scan``, ``nn.RNN``, ``nn.vmap``,
``nn.remat``, ``nn.jit``, ...) run in a trace of their own, which this one cannot
follow: they get no node, and are reported (see :class:`Skipped`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax.core import meta
from jax.extend import core as jax_core

from flax_pc._src import lost_nodes
from flax_pc._src.nodes import ENERGIES, NODES, NOISE, PCNode, lifted_transforms, module_path
from flax_pc._src.terms import EnergyTerm

# Primitives that call their sub-program once, inputs and outputs one to one.
_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
     "remat", "checkpoint", "custom_lin"}
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A listed layer's call that gets no node because it is inside a lifted transform.

    Attributes:
      path: the layer's module path, ``'Encoder_0/Block_0/Dense_0'``.
      transforms: the transforms around it, ``'nn.scan'``.
      carried: whether those transforms carry ``fpc.NODES`` and ``fpc.ENERGIES``.
      hand_written: the paths of the hand-written ``PCNode`` modules called in
        the same transform (``()`` for none).
    """

    path: str
    transforms: str
    carried: bool
    hand_written: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the nodes go, for one input structure.

    Attributes:
      paths: the module path of every listed layer's call outside lifted
        transforms, in call order.
      group_of_call: for each of those calls, the activation whose node it
        reads (an index into ``names``), or ``None`` for no node (a call whose
        result does not reach the output reads the activation itself).
      names: each node's ``(layer path, node name)``: it lives in the scope of
        the first layer that reads its activation and whose result reaches the
        model's output.
      reasons: for each call without a node, why (``'reads the data'``, ...).
      skipped: the listed layers' calls inside lifted transforms.
      hand_written: the paths of the model's own ``PCNode`` modules.
    """

    paths: tuple[tuple[str, ...], ...]
    group_of_call: tuple[int | None, ...]
    names: tuple[tuple[tuple[str, ...], str], ...]
    reasons: tuple[str | None, ...]
    skipped: tuple[Skipped, ...]
    hand_written: tuple[str, ...] = ()


def layer_input(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``(found, x)``: the input a layer is called with (positional, or ``inputs=``)."""
    if args:
        return True, args[0]
    if "inputs" in kwargs:
        return True, kwargs["inputs"]
    return False, None


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, weak_type=_weak(leaf))


def _weak(leaf: Any) -> bool:
    aval = getattr(leaf, "aval", None)
    return bool(getattr(aval, "weak_type", False))


def cache_key(tree: Any) -> Any:
    """A hashable key of ``tree``'s structure, its arrays' shapes and dtypes and its
    other leaves (static values such as ``train=True``); ``None`` if one is unhashable."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    parts = []
    for leaf in leaves:
        if _is_array(leaf):
            parts.append(("array", np.shape(leaf), str(leaf.dtype), _weak(leaf)))
        else:
            try:
                hash(leaf)
            except TypeError:
                return None
            parts.append(("static", leaf))
    return treedef, tuple(parts)


def discovery_mutable(mutable: Any) -> Any:
    """The ``mutable`` of the discovery trace: the caller's, plus flax_pc's collections.

    With both of flax_pc's collections mutable at the top, a transform that
    does not carry them shows it (its scope cannot write them).
    """
    if mutable is True:
        return True
    if mutable in (False, None):
        return [NODES, ENERGIES]
    if isinstance(mutable, str):
        return [mutable, NODES, ENERGIES]
    if isinstance(mutable, Sequence):
        return [*[m for m in mutable if m not in (NODES, ENERGIES)], NODES, ENERGIES]
    return True  # a filter object: everything mutable is a superset


def _root_id(module: nn.Module) -> int:
    """Which trace of a lifted transform's body ``module`` is called in (its root scope)."""
    scope = module.scope
    assert scope is not None
    while scope.parent is not None:
        scope = scope.parent
    return id(scope)


@dataclasses.dataclass
class _Trace:
    """What one discovery trace records (see :func:`_trace`)."""

    jaxpr: Any = None
    num_params: int = 0
    num_nodes: int = 0  # the hand-written nodes' leaves, the trace's inputs after the params
    paths: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    inputs: list[Any] = dataclasses.field(default_factory=list)
    outputs: list[Any] = dataclasses.field(default_factory=list)
    skipped: list[tuple[Skipped, int]] = dataclasses.field(default_factory=list)  # root id
    # Hand-written PCNode calls: (path, root id in a lifted transform or None, carried).
    node_calls: list[tuple[str, int | None, bool]] = dataclasses.field(default_factory=list)
    terms: bool = False  # whether an EnergyTerm was called
    node_shapes: Any = None  # the NODES collection the trace made, as ShapeDtypeStructs


def discover(
    apply_fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    is_listed: Callable[[nn.Module], bool],
    output: Callable[[Any], Any] | None = None,
) -> Placement:
    """Traces ``apply_fn(*args, **kwargs)`` abstractly (once, or twice for a model
    with hand-written nodes) and places the nodes.

    Args:
      apply_fn: the model's ``apply``.
      args: its arguments; ``args[0]`` the variables, with ``'params'``.
      kwargs: its keyword arguments (``mutable``, ``rngs``, the model's own).
      is_listed: whether a module is one of the layers whose inputs get nodes.
      output: the part of the model's output that the output energy reads, as
        a function of the output; ``None`` for all of it.
    """
    first = _trace(apply_fn, args, kwargs, is_listed, output, None)
    trace = first
    carried = all(node_carried for _, _, node_carried in first.node_calls)
    if (first.node_calls or first.terms) and carried:
        # The hand-written nodes' values as inputs: the data flow of an energy pass.
        trace = _trace(apply_fn, args, kwargs, is_listed, output, first.node_shapes or {})
    hand_written = list(dict.fromkeys(path for path, _, _ in first.node_calls))
    in_transform: dict[int, list[str]] = {}
    for path, root, _ in first.node_calls:
        if root is not None and path not in in_transform.setdefault(root, []):
            in_transform[root].append(path)
    skipped = [
        dataclasses.replace(call, hand_written=tuple(in_transform.get(root, ())))
        for call, root in first.skipped
    ]
    return _place(trace, skipped, tuple(hand_written))


def _trace(
    apply_fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    is_listed: Callable[[nn.Module], bool],
    select: Callable[[Any], Any] | None,
    nodes: Any,
) -> _Trace:
    """One discovery trace: ``nodes`` (ShapeDtypeStructs) given as the model's
    :data:`NODES`, or ``None`` for none (the hand-written nodes are then made).

    Both of flax_pc's collections are mutable (:func:`discovery_mutable`); with
    ``nodes`` given, each hand-written node sows its energy, and so does each
    :class:`~flax_pc.EnergyTerm` (here, where its own call records nothing).
    """
    variables = dict(args[0])
    params = variables.pop("params", {})
    variables.pop(NODES, None)
    variables.pop(ENERGIES, None)
    kwargs = dict(kwargs)
    kwargs["mutable"] = discovery_mutable(kwargs.get("mutable", False))
    rngs = dict(kwargs.get("rngs") or {})
    # A hand-written PCNode(value_init='normal') draws its value in this trace.
    rngs.setdefault(NOISE, jax.random.key(0))
    kwargs["rngs"] = rngs

    param_leaves, param_def = jax.tree_util.tree_flatten(params)
    node_leaves, node_def = jax.tree_util.tree_flatten(nodes if nodes is not None else {})
    rest_leaves, rest_def = jax.tree_util.tree_flatten((variables, tuple(args[1:]), kwargs))
    array_at = [i for i, leaf in enumerate(rest_leaves) if _is_array(leaf)]
    found = _Trace(num_params=len(param_leaves), num_nodes=len(node_leaves))

    def record(next_fun, call_args, call_kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*call_args, **call_kwargs)
        if isinstance(module, EnergyTerm):
            found.terms = True
            result = next_fun(*call_args, **call_kwargs)
            if nodes is not None and module.is_mutable_collection(ENERGIES):
                # What the term reads is an output its energy needs, as a node's prediction.
                module.sow(ENERGIES, "energy", module.energy(*call_args, **call_kwargs))
            return result
        if isinstance(module, PCNode):
            return node_call(next_fun, call_args, call_kwargs, module)
        if not is_listed(module):
            return next_fun(*call_args, **call_kwargs)
        if lifted_transforms(module):
            carried = not lost_nodes.missing_collections(module)
            transforms = lost_nodes.transform_names(module)
            found.skipped.append(
                (Skipped(module_path(module), transforms, carried), _root_id(module))
            )
            return next_fun(*call_args, **call_kwargs)
        assert module.scope is not None  # intercepted calls are of bound modules
        has_input, x = layer_input(call_args, call_kwargs)
        result = next_fun(*call_args, **call_kwargs)
        found.paths.append(tuple(module.scope.path))
        found.inputs.append(x if has_input else None)
        found.outputs.append(result)
        return result

    def node_call(next_fun, call_args, call_kwargs, module):
        root = _root_id(module) if lifted_transforms(module) else None
        carried = not lost_nodes.missing_collections(module) if nodes is None else True
        found.node_calls.append((module_path(module), root, carried))
        value = next_fun(*call_args, **call_kwargs)
        if nodes is not None and module.latent == "error" and module.has_variable(NODES, "error"):
            # ePC's node returns prediction + error; what it holds is its error alone.
            return meta.unbox(module.get_variable(NODES, "error"))
        return value

    def probe(param_leaves, node_leaves, array_leaves):
        leaves = list(rest_leaves)
        for i, leaf in zip(array_at, array_leaves):
            leaves[i] = leaf
        variables, more_args, call_kwargs = jax.tree_util.tree_unflatten(rest_def, leaves)
        call_params = jax.tree_util.tree_unflatten(param_def, param_leaves)
        given = {"params": call_params, **variables}
        if nodes is not None:
            given[NODES] = jax.tree_util.tree_unflatten(node_def, node_leaves)
        with nn.intercept_methods(record):
            model_output, collections = apply_fn(given, *more_args, **call_kwargs)
        collections = dict(collections)
        if nodes is None:
            found.node_shapes = jax.tree_util.tree_map(
                _abstract, meta.unbox(collections.get(NODES, {}))
            )
        sinks = (
            jax.tree_util.tree_leaves(collections.get(ENERGIES, {})) if nodes is not None else []
        )
        selected = model_output if select is None else select(model_output)
        inputs = [x if _is_array(x) else None for x in found.inputs]
        return selected, sinks, inputs, found.outputs

    found.jaxpr = jax.make_jaxpr(probe)(
        [_abstract(leaf) for leaf in param_leaves],
        list(node_leaves),
        [_abstract(rest_leaves[i]) for i in array_at],
    ).jaxpr
    return found


def _place(trace: _Trace, skipped: list[Skipped], hand_written: tuple[str, ...]) -> Placement:
    """The placement from a discovery trace (outputs: the model's selected output, the
    sown energies, the layers' inputs, the layers' outputs)."""
    jaxpr, paths, inputs, outputs = trace.jaxpr, trace.paths, trace.inputs, trace.outputs
    out_vars = list(jaxpr.outvars)
    num_layer_outputs = len(jax.tree_util.tree_leaves(outputs))
    num_inputs = sum(1 for x in inputs if _is_array(x))
    num_live = len(out_vars) - num_inputs - num_layer_outputs  # the output, the energies
    live_vars, rest = out_vars[:num_live], out_vars[num_live:]
    input_vars_iter = iter(rest[:num_inputs])
    input_vars = [next(input_vars_iter) if _is_array(x) else None for x in inputs]
    output_vars_iter = iter(rest[num_inputs:])
    output_vars = [
        [next(output_vars_iter) for _ in jax.tree_util.tree_leaves(out)] for out in outputs
    ]

    params = trace.num_params
    depends = _forward(jaxpr, set(jaxpr.invars[:params]))
    from_nodes = _forward(jaxpr, set(jaxpr.invars[params : params + trace.num_nodes]))
    live = _backward(jaxpr, {v for v in live_vars if is_var(v)})

    readers: dict[Any, list[int]] = {}  # activation (a jaxpr variable) -> its readers
    reasons: list[str | None] = []
    for index, var in enumerate(input_vars):
        if var is None or not is_var(var):
            reasons.append("its input is not an array computed by the model")
        elif var not in depends and var in from_nodes:
            reasons.append(
                "its input is held by a hand-written PCNode (it is a node's value, or computed "
                "from node values without a layer with params)"
            )
        elif var not in depends:
            reasons.append("its input does not depend on the params (the data)")
        else:
            reasons.append(None)
            readers.setdefault(var, []).append(index)
    group_of_call: list[int | None] = [None] * len(input_vars)
    names: list[tuple[tuple[str, ...], str]] = []
    per_layer: dict[tuple[str, ...], int] = {}
    for calls in readers.values():
        reaching = [k for k in calls if any(is_var(v) and v in live for v in output_vars[k])]
        for k in calls:
            if k not in reaching:  # its result is discarded: the node's value is not its business
                reasons[k] = "its result does not reach the model's output"
        if not reaching:
            continue
        owner = paths[reaching[0]]
        count = per_layer.get(owner, 0)
        per_layer[owner] = count + 1
        for k in reaching:
            group_of_call[k] = len(names)
        names.append((owner, "input" if not count else f"input_{count}"))
    return Placement(
        paths=tuple(paths),
        group_of_call=tuple(group_of_call),
        names=tuple(names),
        reasons=tuple(reasons),
        skipped=tuple(skipped),
        hand_written=hand_written,
    )


def is_var(v: Any) -> bool:
    """Whether ``v`` is a variable of a jaxpr (not a literal, nor a dropped result)."""
    return isinstance(v, jax_core.Var) and not isinstance(v, jax_core.DropVar)


def _called(eqn: Any) -> jax_core.Jaxpr | None:
    """The sub-program of a call-like equation, its inputs and outputs one to one with the
    equation's; ``None`` for any other equation."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        sub = getattr(sub, "jaxpr", sub)
        if isinstance(sub, jax_core.Jaxpr) and (
            len(sub.invars) == len(eqn.invars) and len(sub.outvars) == len(eqn.outvars)
        ):
            return sub
    return None


def _scanned(eqn: Any) -> tuple[jax_core.Jaxpr, int, int] | None:
    """``(body, num_consts, num_carry)`` of a ``scan`` equation; ``None`` for any other.

    The body's inputs are ``consts + carry + xs`` and its outputs ``carry + ys``,
    one to one with the equation's.
    """
    if eqn.primitive.name != "scan":
        return None
    body = getattr(eqn.params.get("jaxpr"), "jaxpr", None)
    consts, carry = eqn.params.get("num_consts"), eqn.params.get("num_carry")
    if not isinstance(body, jax_core.Jaxpr) or not isinstance(consts, int):
        return None
    if not isinstance(carry, int) or len(body.invars) != len(eqn.invars):
        return None
    if len(body.outvars) != len(eqn.outvars):
        return None
    return body, consts, carry


def forward_masks(jaxpr: jax_core.Jaxpr, seeds: dict[Any, int]) -> dict[Any, int]:
    """For each variable of ``jaxpr``, the bits of the ``seeds`` it depends on.

    ``seeds`` maps variables (inputs) to bit masks (an int per variable, one
    bit per source); a variable depends on the sources whose bits its mask holds.
    """
    masks = dict(seeds)
    for eqn in jaxpr.eqns:
        hit = [masks.get(v, 0) if is_var(v) else 0 for v in eqn.invars]
        if not any(hit):
            continue
        for v, mask in zip(eqn.outvars, _equation_forward(eqn, hit)):
            if mask and is_var(v):
                masks[v] = masks.get(v, 0) | mask
    return masks


def _out_mask(masks: dict[Any, int], v: Any) -> int:
    return masks.get(v, 0) if is_var(v) else 0


def _equation_forward(eqn: Any, hit: list[int]) -> list[int]:
    """The masks of ``eqn``'s outputs from those of its inputs (``hit``)."""
    sub = _called(eqn)
    if sub is not None:
        inner = forward_masks(sub, {s: m for s, m in zip(sub.invars, hit) if m})
        return [_out_mask(inner, s) for s in sub.outvars]
    scanned = _scanned(eqn)
    if scanned is not None:
        body, consts, carry = scanned
        seeds = list(hit)
        while True:  # the carry, to a fixed point
            inner = forward_masks(body, {s: m for s, m in zip(body.invars, seeds) if m})
            outs = [_out_mask(inner, s) for s in body.outvars]
            grown = False
            for i in range(carry):
                mask = seeds[consts + i] | outs[i]
                if mask != seeds[consts + i]:
                    seeds[consts + i], grown = mask, True
            if not grown:
                break
        # A final carry may be the initial one (length 0): both.
        return [outs[i] | seeds[consts + i] for i in range(carry)] + outs[carry:]
    mask = 0
    for m in hit:
        mask |= m
    return [mask] * len(eqn.outvars)


def _forward(jaxpr: jax_core.Jaxpr, reached: set[Any]) -> set[Any]:
    """The variables of ``jaxpr`` that depend on those in ``reached``."""
    return {v for v, mask in forward_masks(jaxpr, dict.fromkeys(reached, 1)).items() if mask}


def _backward(jaxpr: jax_core.Jaxpr, needed: set[Any]) -> set[Any]:
    """The variables of ``jaxpr`` that those in ``needed`` depend on (themselves included)."""
    needed = set(needed)
    for eqn in reversed(jaxpr.eqns):
        wanted = [is_var(v) and v in needed for v in eqn.outvars]
        if not any(wanted):
            continue
        sub = _called(eqn)
        scanned = _scanned(eqn)
        if sub is not None:
            inner = _backward(sub, {s for s, w in zip(sub.outvars, wanted) if w and is_var(s)})
            needed.update(v for v, s in zip(eqn.invars, sub.invars) if is_var(v) and s in inner)
        elif scanned is not None:
            body, consts, carry = scanned
            outs = list(wanted)
            while True:  # the carry, to a fixed point
                inner = _backward(body, {s for s, w in zip(body.outvars, outs) if w and is_var(s)})
                grown = False
                for i in range(carry):
                    if body.invars[consts + i] in inner and not outs[i]:
                        outs[i], grown = True, True
                if not grown:
                    break
            needed.update(
                v
                for k, (v, s) in enumerate(zip(eqn.invars, body.invars))
                # A final carry may be the initial one (length 0).
                if is_var(v) and (s in inner or (consts <= k < consts + carry and outs[k - consts]))
            )
        else:
            needed.update(v for v in eqn.invars if is_var(v))
    return needed
