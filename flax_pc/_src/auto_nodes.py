"""``with_nodes``: predictive coding for a linen model written without ``PCNode`` modules.

Linen lets a function see every module call (``nn.intercept_methods``);
:func:`~flax_pc.with_nodes` uses it to put a value node on the **input** of every call
of the listed layer types, except the first call (whose input is the data).
For a network written ``layer -> activation -> layer -> ...`` that is a node
after every hidden activation, the standard placement:

=====================================  ==========================================
model as written                       what ``with_nodes(model.apply)`` trains
=====================================  ==========================================
``Conv_0(x)`` (first call)             ``Conv_0(x)``: the data, no node
``relu``, ``avg_pool``                 unchanged
``Conv_1(h)``                          ``Conv_1(PCNode(h))``, node ``Conv_1/input``
``relu``, ``avg_pool``, ``reshape``    unchanged
``Dense_0(h)``                         ``Dense_0(PCNode(h))``, node ``Dense_0/input``
``relu``
``Dense_1(h)`` (output)                ``Dense_1(PCNode(h))``, node ``Dense_1/input``
=====================================  ==========================================

The params tree stays the model's own (a node has no params), so a
checkpoint trained by backprop loads as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from flax import linen as nn

from flax_pc._src.nodes import PCNode
from flax_pc._src.types import ApplyFn

__all__ = ["with_nodes"]

#: The name of the node put on a layer's input, inside the layer's scope.
NODE_NAME = "input"
_NODE_FIELDS = ("energy", "precision", "value_init", "value_init_stddev", "latent")


def with_nodes(
    apply_fn: ApplyFn,
    layers: Sequence[type[nn.Module]] = (nn.Dense, nn.Conv),
    **node_kwargs: Any,
) -> ApplyFn:
    """Returns ``apply_fn`` with a value node on the input of the listed layers.

    Every call of a module of a type in ``layers`` (subclasses included) gets
    a ``PCNode(**node_kwargs)`` on its input, except the call of the first
    such layer the model makes (its input is the data). The node lives in the
    layer's scope as ``<layer path>/input`` (a second call of the same layer,
    weight tying, gets ``input_1``, …). Everything else behaves as
    ``apply_fn``: params only gives the plain network; :data:`~flax_pc.NODES`
    mutable, :data:`~flax_pc.ENERGIES` mutable, ``rngs`` and ``model_state``
    work as for a model with hand-written nodes, so the result goes straight
    to :class:`~flax_pc.PCTrainState` (``apply_fn=``), :func:`~flax_pc.init_nodes`,
    :func:`~flax_pc.energy`, :func:`~flax_pc.infer` and ``jax.jit``.

    What it cannot see: layers called inside a lifted transform (``nn.scan``,
    ``nn.vmap``) whose ``variable_axes`` do not list ``fpc.NODES`` and
    ``fpc.ENERGIES`` get nodes that the transform drops (the energy call then
    says that no value nodes were given): write the ``PCNode`` modules of such a
    block by hand. A layer type that is not listed (``nn.DenseGeneral`` in
    attention, ``nn.ConvTranspose``, …) gets no node unless you list it.

    Args:
      apply_fn: the model's ``apply`` (or ``functools.partial(model.apply,
        train=True)``).
      layers: the layer types whose inputs get nodes.
      **node_kwargs: passed to every ``PCNode`` (``energy``, ``precision``,
        ``value_init``, ``value_init_stddev``, ``latent``).

    Returns:
      A function with ``apply_fn``'s signature.
    """
    layers = tuple(layers)
    if not layers or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in layers):
        raise TypeError(f"layers must be a non-empty tuple of linen Module types, got {layers!r}.")
    unknown = sorted(set(node_kwargs) - set(_NODE_FIELDS))
    if unknown:
        raise TypeError(f"with_nodes got {unknown}; PCNode takes {list(_NODE_FIELDS)}.")
    PCNode(**node_kwargs)  # a bad value (e.g. value_init) fails here, not at the first call

    @functools.wraps(apply_fn)
    def apply(*args: Any, **kwargs: Any) -> Any:
        first: list[tuple[str, ...]] = []  # path of the first listed layer called
        calls: dict[tuple[str, ...], int] = {}  # calls of each layer with a node so far

        def put_node(next_fun, call_args, call_kwargs, context):
            module = context.module
            if context.method_name != "__call__" or not isinstance(module, layers):
                return next_fun(*call_args, **call_kwargs)
            assert module.scope is not None  # intercepted calls are of bound modules
            path = tuple(module.scope.path)
            if not first:
                first.append(path)
            if path == first[0]:  # the data goes in unchanged (also on a re-trace)
                return next_fun(*call_args, **call_kwargs)
            count = calls.get(path, 0)
            calls[path] = count + 1
            node = PCNode(
                **node_kwargs,
                parent=module,
                name=NODE_NAME if not count else f"{NODE_NAME}_{count}",
            )
            if call_args:
                return next_fun(node(call_args[0]), *call_args[1:], **call_kwargs)
            if "inputs" in call_kwargs:
                return next_fun(**{**call_kwargs, "inputs": node(call_kwargs["inputs"])})
            raise TypeError(
                f"with_nodes: {type(module).__name__} at {'/'.join(path)} was called without "
                "an input (positional, or inputs=)."
            )

        with nn.intercept_methods(put_node):
            result = apply_fn(*args, **kwargs)
        if not first:
            names = ", ".join(t.__name__ for t in layers)
            raise ValueError(
                f"with_nodes: the model called no layer of the types listed in layers ({names}), "
                "so there is nowhere to put a value node; list the layer types the model uses."
            )
        return result

    return apply
