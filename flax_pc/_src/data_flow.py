"""Where ``with_nodes`` puts value nodes: the data flow of one trace of the model.

One discovery trace per input structure: ``jax.make_jaxpr`` of the model's
``apply`` under ``nn.intercept_methods``, recording every call of a listed
layer (its input and its output), with the model's params as the trace's
first inputs. In the resulting jaxpr:

- an activation *depends on the params* when a params input reaches it
  (forward through the equations);
- a layer's result *reaches the output* when the model's output needs it
  (backward from the output);
- two layer calls read *the same activation* when their inputs are one
  variable of the jaxpr (attention's query, key and value projections read
  one ``inputs_q``).

A call-like equation (``jit``, ``custom_jvp_call``, ``remat``, ...) is followed
inside; any other equation with a sub-program (``scan``, ``while``, ``cond``)
is taken as a whole: each of its results depends on each of its inputs, which
may say "depends" or "reaches" where the data does not, never the reverse.

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
from jax.extend import core as jax_core

from flax_pc._src import lost_nodes
from flax_pc._src.nodes import ENERGIES, NODE_RNG, NODES, lifted_transforms, module_path

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
    """

    path: str
    transforms: str
    carried: bool


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
    """

    paths: tuple[tuple[str, ...], ...]
    group_of_call: tuple[int | None, ...]
    names: tuple[tuple[tuple[str, ...], str], ...]
    reasons: tuple[str | None, ...]
    skipped: tuple[Skipped, ...]


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


def discover(
    apply_fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    is_listed: Callable[[nn.Module], bool],
) -> Placement:
    """Traces ``apply_fn(*args, **kwargs)`` once (abstractly) and places the nodes.

    Args:
      apply_fn: the model's ``apply``.
      args: its arguments; ``args[0]`` the variables, with ``'params'``.
      kwargs: its keyword arguments (``mutable``, ``rngs``, the model's own).
      is_listed: whether a module is one of the layers whose inputs get nodes.
    """
    variables = dict(args[0])
    params = variables.pop("params", {})
    variables.pop(NODES, None)
    variables.pop(ENERGIES, None)
    kwargs = dict(kwargs)
    kwargs["mutable"] = discovery_mutable(kwargs.get("mutable", False))
    rngs = dict(kwargs.get("rngs") or {})
    # A hand-written PCNode(value_init='normal') draws its value in this trace.
    rngs.setdefault(NODE_RNG, jax.random.key(0))
    kwargs["rngs"] = rngs

    param_leaves, param_def = jax.tree_util.tree_flatten(params)
    rest_leaves, rest_def = jax.tree_util.tree_flatten((variables, tuple(args[1:]), kwargs))
    array_at = [i for i, leaf in enumerate(rest_leaves) if _is_array(leaf)]

    paths: list[tuple[str, ...]] = []
    recorded_inputs: list[Any] = []
    recorded_outputs: list[Any] = []
    skipped: list[Skipped] = []

    def record(next_fun, call_args, call_kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not is_listed(module):
            return next_fun(*call_args, **call_kwargs)
        if lifted_transforms(module):
            carried = not lost_nodes.missing_collections(module)
            transforms = lost_nodes.transform_names(module)
            skipped.append(Skipped(module_path(module), transforms, carried))
            return next_fun(*call_args, **call_kwargs)
        assert module.scope is not None  # intercepted calls are of bound modules
        found, x = layer_input(call_args, call_kwargs)
        output = next_fun(*call_args, **call_kwargs)
        paths.append(tuple(module.scope.path))
        recorded_inputs.append(x if found else None)
        recorded_outputs.append(output)
        return output

    def probe(param_leaves, array_leaves):
        leaves = list(rest_leaves)
        for i, leaf in zip(array_at, array_leaves):
            leaves[i] = leaf
        variables, more_args, call_kwargs = jax.tree_util.tree_unflatten(rest_def, leaves)
        call_params = jax.tree_util.tree_unflatten(param_def, param_leaves)
        with nn.intercept_methods(record):
            output, _ = apply_fn({"params": call_params, **variables}, *more_args, **call_kwargs)
        inputs = [x if _is_array(x) else None for x in recorded_inputs]
        return output, inputs, recorded_outputs

    closed = jax.make_jaxpr(probe)(
        [_abstract(leaf) for leaf in param_leaves],
        [_abstract(rest_leaves[i]) for i in array_at],
    )
    return _place(
        closed.jaxpr, len(param_leaves), paths, recorded_inputs, recorded_outputs, skipped
    )


def _place(
    jaxpr: jax_core.Jaxpr,
    num_params: int,
    paths: list[tuple[str, ...]],
    inputs: list[Any],
    outputs: list[Any],
    skipped: list[Skipped],
) -> Placement:
    """The placement from the discovery jaxpr (outputs: model output, inputs, layer outputs)."""
    out_vars = list(jaxpr.outvars)
    num_layer_outputs = len(jax.tree_util.tree_leaves(outputs))
    num_inputs = sum(1 for x in inputs if _is_array(x))
    num_model = len(out_vars) - num_inputs - num_layer_outputs
    model_vars, rest = out_vars[:num_model], out_vars[num_model:]
    input_vars_iter = iter(rest[:num_inputs])
    input_vars = [next(input_vars_iter) if _is_array(x) else None for x in inputs]
    output_vars_iter = iter(rest[num_inputs:])
    output_vars = [
        [next(output_vars_iter) for _ in jax.tree_util.tree_leaves(out)] for out in outputs
    ]

    depends = _forward(jaxpr, set(jaxpr.invars[:num_params]))
    live = _backward(jaxpr, {v for v in model_vars if _is_var(v)})

    readers: dict[Any, list[int]] = {}  # activation (a jaxpr variable) -> its readers
    reasons: list[str | None] = []
    for index, var in enumerate(input_vars):
        if var is None or not _is_var(var):
            reasons.append("its input is not an array computed by the model")
        elif var not in depends:
            reasons.append("its input does not depend on the params (the data)")
        else:
            reasons.append(None)
            readers.setdefault(var, []).append(index)
    group_of_call: list[int | None] = [None] * len(input_vars)
    names: list[tuple[tuple[str, ...], str]] = []
    per_layer: dict[tuple[str, ...], int] = {}
    for calls in readers.values():
        reaching = [k for k in calls if any(_is_var(v) and v in live for v in output_vars[k])]
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
    )


def _is_var(v: Any) -> bool:
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


def _forward(jaxpr: jax_core.Jaxpr, reached: set[Any]) -> set[Any]:
    """The variables of ``jaxpr`` that depend on those in ``reached``."""
    reached = set(reached)
    for eqn in jaxpr.eqns:
        hit = [_is_var(v) and v in reached for v in eqn.invars]
        if not any(hit):
            continue
        sub = _called(eqn)
        if sub is None:
            reached.update(v for v in eqn.outvars if _is_var(v))
            continue
        inner = _forward(sub, {s for s, h in zip(sub.invars, hit) if h})
        reached.update(
            v for v, s in zip(eqn.outvars, sub.outvars) if _is_var(v) and _is_var(s) and s in inner
        )
    return reached


def _backward(jaxpr: jax_core.Jaxpr, needed: set[Any]) -> set[Any]:
    """The variables of ``jaxpr`` that those in ``needed`` depend on (themselves included)."""
    needed = set(needed)
    for eqn in reversed(jaxpr.eqns):
        wanted = [_is_var(v) and v in needed for v in eqn.outvars]
        if not any(wanted):
            continue
        sub = _called(eqn)
        if sub is None:
            needed.update(v for v in eqn.invars if _is_var(v))
            continue
        inner = _backward(sub, {s for s, w in zip(sub.outvars, wanted) if w and _is_var(s)})
        needed.update(v for v, s in zip(eqn.invars, sub.invars) if _is_var(v) and s in inner)
    return needed
