"""``with_nodes``: predictive coding for a linen model written without ``PCNode`` modules.

**The placement rule.** :func:`~flax_pc.with_nodes` puts one value node on each
distinct activation that a listed layer reads (``nn.Dense``, ``nn.DenseGeneral``,
``nn.Einsum``, ``nn.Conv``, ``nn.ConvTranspose`` by default) and that depends on
the model's params, unless no reader's result reaches the model's output.
So the raw inputs never get a node, wherever the first listed layer sits; the
output of an embedding (or of any unlisted layer with params) does when a
listed layer reads it; layers that read one activation share its node
(attention's query, key and value projections); and a layer called for a
result the model discards puts no node on its input. The rule is applied to
the data flow of one trace of the model per input structure (see
``flax_pc._src.data_flow``), and layers inside lifted transforms (``nn.scan``,
``nn.RNN``, ``nn.vmap``, ``nn.remat``, ...) get no node (a warning names them).

"The model's output" is all of it, or the part the output energy reads where
``output=`` says which (``output=lambda out: out[0]`` for a model that returns
``(logits, extras)``): a layer whose result reaches only the rest (a probe, a
second head) puts no node on its input. A model with ``PCNode`` modules of its
own keeps them as written, and no second node goes on an activation that one
of them holds (its value, or a function of node values and the data alone).

=========================================  ==========================================
model as written (Flax's MNIST CNN)        what ``with_nodes(model.apply)`` trains
=========================================  ==========================================
``Conv_0(x)``                              ``Conv_0(x)``: the data, no node
``relu``, ``avg_pool``                     unchanged
``Conv_1(h)``                              ``Conv_1(PCNode(h))``, node ``Conv_1/input``
``relu``, ``avg_pool``, ``reshape``        unchanged
``Dense_0(h)``                             ``Dense_0(PCNode(h))``, node ``Dense_0/input``
``relu``
``Dense_1(h)`` (output)                    ``Dense_1(PCNode(h))``, node ``Dense_1/input``
=========================================  ==========================================

A node lives in the scope of the first layer that reads its activation (and
whose result reaches the output), as
``<layer path>/input`` (a second node in one layer's scope, e.g. of a layer
called twice on different activations, is ``input_1``): readable names that
stay the same from run to run, so a checkpoint resumes. The params tree stays
the model's own (a node has no params), so a checkpoint trained by backprop
loads as it is.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Sequence
from typing import Any

from flax import linen as nn

from flax_pc._src import data_flow, user_warnings
from flax_pc._src.nodes import ENERGIES, NODES, PCNode, lifted_transforms, module_path
from flax_pc._src.types import ApplyFn

__all__ = ["with_nodes"]

#: The layers whose inputs get nodes by default: linen's kernel layers.
DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Dense, nn.DenseGeneral, nn.Einsum, nn.Conv, nn.ConvTranspose
)  # fmt: skip
_NODE_FIELDS = ("energy", "precision", "value_init", "value_init_stddev", "latent")
_WRAPPED = "_flax_pc_with_nodes"  # marks a function that with_nodes returned
_MAX_LISTED = 6  # layer paths named in a message, before "and N more"
_MAX_LISTED_PATHS = 16  # the model's layer paths named by an exclude= error
_MAX_CACHED = 32  # placements kept, one per input structure


def with_nodes(
    apply_fn: ApplyFn,
    layers: type[nn.Module] | Sequence[type[nn.Module]] = DEFAULT_LAYERS,
    *,
    exclude: str | Sequence[str] = (),
    output: Callable[[Any], Any] | None = None,
    **node_kwargs: Any,
) -> ApplyFn:
    """Returns ``apply_fn`` with value nodes on the activations the listed layers read.

    The placement rule (see the module doc): one ``PCNode(**node_kwargs)`` per
    distinct activation that a layer of a type in ``layers`` (subclasses
    included) reads, that depends on the params, and whose readers' results
    reach the model's output (the part of it that ``output`` selects). The
    node lives in its first such reader's scope as ``<layer path>/input``.
    The model's own ``PCNode`` modules, if it has any, stay as written, and
    an activation that one of them holds gets no second node: with_nodes then
    adds nodes only where the hand-written ones leave a layer with params
    between two nodes. Everything else behaves as ``apply_fn``: params
    only gives the plain network; :data:`~flax_pc.NODES` mutable,
    :data:`~flax_pc.ENERGIES` mutable, ``rngs`` and ``model_state`` work as
    for a model with hand-written nodes, so the result goes straight to
    :class:`~flax_pc.PCTrainState` (``apply_fn=``), :func:`~flax_pc.init_nodes`,
    :func:`~flax_pc.energy`, :func:`~flax_pc.infer` and ``jax.jit``.

    Where the nodes go is found once per input structure (shapes, dtypes and
    static arguments) by tracing the model abstractly (``jax.make_jaxpr``):
    one extra trace, no compile.

    Layers called inside a lifted transform (``nn.scan``, ``nn.RNN``,
    ``nn.vmap``, ``nn.remat``, ``nn.jit``, ...) get no node: a transform that
    does not carry ``fpc.NODES`` and ``fpc.ENERGIES`` would drop it, and the
    data flow inside one that does is not followed. A warning names them
    once; write the ``PCNode`` modules of such a block by hand (with
    ``variable_axes={..., fpc.NODES: axis, fpc.ENERGIES: axis}``), and
    with_nodes keeps them. If no node can be placed at all (and the model has
    none of its own), calling the result raises, saying why; so does an
    ``exclude`` pattern that matches no layer of the model, and a type given
    in ``layers`` of which the model calls no layer.

    Args:
      apply_fn: the model's ``apply`` (or ``functools.partial(model.apply,
        train=True)``).
      layers: a layer type, or a tuple of them, whose inputs get nodes;
        default linen's kernel layers (``nn.Dense``, ``nn.DenseGeneral``,
        ``nn.Einsum``, ``nn.Conv``, ``nn.ConvTranspose``).
      exclude: module-path patterns (``fnmatch``: ``'head'``, ``'Encoder_0/*'``,
        ``'*/attention/*'``) of layers to leave out; a pattern that matches a
        module leaves out every layer inside it. Each must match a layer of a
        listed type (or a module around one), else calling the result raises.
      output: the part of the model's output that the output energy reads,
        as a function of the output (``lambda out: out[0]``, ``lambda out:
        out['logits']``); ``None`` (default) for all of it. A layer whose result
        reaches only the rest puts no node on its input: such a node could not
        change the output energy, yet its energy would hold the nodes before
        it back. The result still returns the whole output.
      **node_kwargs: passed to every ``PCNode`` (``energy``, ``precision``,
        ``value_init``, ``value_init_stddev``, ``latent``).

    Returns:
      A function with ``apply_fn``'s signature.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         h = nn.relu(nn.Dense(8)(x))
      ...         return nn.Dense(2)(nn.relu(nn.Dense(8)(h)))
      >>> model, x = MLP(), jnp.ones((3, 4))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> apply_fn = fpc.with_nodes(model.apply)
      >>> jax.tree_util.tree_map(jnp.shape, fpc.init_nodes(apply_fn, params, x))
      {'Dense_1': {'input': {'value': (3, 8)}}, 'Dense_2': {'input': {'value': (3, 8)}}}
    """
    if is_with_nodes(apply_fn):
        raise ValueError(
            "with_nodes: apply_fn is already the result of fpc.with_nodes; wrapping it again "
            "would put two nodes on every activation. Call with_nodes once, on the model's "
            "own apply."
        )
    layer_types = _check_layers(layers)
    patterns = _check_exclude(exclude)
    if output is not None and not callable(output):
        raise TypeError(
            "output must be a function of the model's output that returns the part the "
            f"output energy reads (e.g. lambda out: out[0]), got {type(output).__name__}."
        )
    given_layers = () if layers is DEFAULT_LAYERS else layer_types
    unknown = sorted(set(node_kwargs) - set(_NODE_FIELDS))
    if unknown:
        raise TypeError(f"with_nodes got {unknown}; PCNode takes {list(_NODE_FIELDS)}.")
    PCNode(**node_kwargs)  # a bad value (e.g. value_init) fails here, not at the first call

    def is_listed(module: nn.Module) -> bool:
        return isinstance(module, layer_types) and not _excluded(module, patterns)

    placements: dict[Any, data_flow.Placement] = {}
    warned: list[bool] = []

    def placement(args: tuple[Any, ...], kwargs: dict[str, Any]) -> data_flow.Placement:
        key = _structure_key(args, kwargs)
        found = placements.get(key) if key is not None else None
        if found is None:
            called: dict[str, nn.Module] = {}  # every module called: path -> module

            def is_listed_here(module: nn.Module) -> bool:
                called.setdefault(module_path(module), module)
                return is_listed(module)

            found = data_flow.discover(apply_fn, args, kwargs, is_listed_here, output)
            _check_matched(called, layer_types, given_layers, patterns)
            _check_placement(found, layer_types)
            if key is not None:
                if len(placements) >= _MAX_CACHED:
                    placements.pop(next(iter(placements)))  # the oldest
                placements[key] = found
        if found.skipped and not warned:
            warned.append(True)
            user_warnings.warn(_skipped_message(found))
        return found

    @functools.wraps(apply_fn)
    def apply(*args: Any, **kwargs: Any) -> Any:
        if not args:
            raise TypeError("with_nodes: call the result as apply(variables, inputs, ...).")
        plan = placement(args, kwargs)
        made: dict[int, Any] = {}  # group -> its node's output, in this pass
        count = [0]

        def put_node(next_fun, call_args, call_kwargs, context):
            module = context.module
            if context.method_name != "__call__" or not is_listed(module):
                return next_fun(*call_args, **call_kwargs)
            if lifted_transforms(module):
                return next_fun(*call_args, **call_kwargs)
            assert module.scope is not None  # intercepted calls are of bound modules
            index = count[0]
            count[0] += 1
            path = tuple(module.scope.path)
            if index >= len(plan.paths) or plan.paths[index] != path:
                raise RuntimeError(
                    f"with_nodes: the model called {'/'.join(path)} as its listed layer call "
                    f"#{index}, but its trace for this input structure did not. with_nodes "
                    "needs the model to make the same layer calls for inputs of one structure."
                )
            group = plan.group_of_call[index]
            if group is None:
                return next_fun(*call_args, **call_kwargs)
            if group not in made:
                _, x = data_flow.layer_input(call_args, call_kwargs)
                made[group] = PCNode(**node_kwargs, parent=module, name=plan.names[group][1])(x)
            value = made[group]
            if call_args:
                return next_fun(value, *call_args[1:], **call_kwargs)
            return next_fun(**{**call_kwargs, "inputs": value})

        with nn.intercept_methods(put_node):
            return apply_fn(*args, **kwargs)

    setattr(apply, _WRAPPED, True)
    return apply


def is_with_nodes(apply_fn: Any) -> bool:
    """Whether ``apply_fn`` is (a ``functools.partial`` or wrapper of) a result of
    :func:`with_nodes`."""
    seen = 0
    while apply_fn is not None and seen < 100:
        if getattr(apply_fn, _WRAPPED, False):
            return True
        apply_fn = getattr(apply_fn, "func", None) or getattr(apply_fn, "__wrapped__", None)
        seen += 1
    return False


def _check_layers(layers: Any) -> tuple[type[nn.Module], ...]:
    if isinstance(layers, type):
        layers = (layers,)
    try:
        layers = tuple(layers)
    except TypeError:
        layers = (layers,)
    if not layers or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in layers):
        raise TypeError(
            "layers must be a linen Module type or a non-empty tuple of them (e.g. nn.Dense, "
            f"or (nn.Dense, nn.Conv)), got {layers!r}."
        )
    return layers


def _check_exclude(exclude: Any) -> tuple[str, ...]:
    patterns = (exclude,) if isinstance(exclude, str) else exclude
    if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            "exclude must be a module-path pattern or a tuple of them (e.g. 'head' or "
            f"('Encoder_0/*',)), got {exclude!r}."
        )
    return tuple(patterns)


def _excluded(module: nn.Module, patterns: tuple[str, ...]) -> bool:
    if not patterns or module.scope is None:
        return False
    path = module.scope.path
    prefixes = ["/".join(path[:i]) for i in range(1, len(path) + 1)]
    return any(fnmatch.fnmatchcase(p, pattern) for pattern in patterns for p in prefixes)


def _structure_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What decides the placement: everything but flax_pc's own collections and
    which collections are mutable for flax_pc."""
    variables = {k: v for k, v in dict(args[0]).items() if k not in (NODES, ENERGIES)}
    rest = {k: v for k, v in kwargs.items() if k != "mutable"}
    mutable = data_flow.discovery_mutable(kwargs.get("mutable", False))
    mutable = mutable if mutable is True else tuple(mutable)
    return data_flow.cache_key((variables, args[1:], rest, mutable))


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _skipped_message(placement: data_flow.Placement) -> str:
    by_reason: dict[str, list[str]] = {}
    without_nodes = False
    for call in placement.skipped:
        if call.hand_written:
            why = (
                f"inside {call.transforms}, where with_nodes does not follow the data; the "
                f"nodes there are your hand-written ones ({_listed(list(call.hand_written))}), "
                "kept as written"
            )
        elif call.carried:
            without_nodes = True
            why = (
                f"inside {call.transforms}, where with_nodes does not follow the data (only "
                "outside lifted transforms)"
            )
        else:
            without_nodes = True
            why = (
                f"inside {call.transforms}, which does not carry fpc.NODES and fpc.ENERGIES, "
                "so a node there would be dropped"
            )
        paths = by_reason.setdefault(why, [])
        if call.path not in paths:
            paths.append(call.path)
    parts = [f"{_listed(paths)}: {why}" for why, paths in by_reason.items()]
    if without_nodes:
        fix = (
            "For predictive coding inside such a block, write its fpc.PCNode modules by hand "
            "and list variable_axes={..., fpc.NODES: axis, fpc.ENERGIES: axis} in the transform."
        )
    else:
        paths = [call.path for call in placement.skipped]
        common = _common_prefix(paths)
        fix = (
            f"exclude={common + '/*'!r} leaves them out, without this warning." if common else
            "exclude= (their module paths) leaves them out, without this warning."
        )  # fmt: skip
    return (
        "with_nodes put no value node on the inputs of these layers. "
        + "; ".join(parts)
        + ". "
        + fix
    )


def _common_prefix(paths: list[str]) -> str:
    """The longest module path that holds all ``paths`` (``''`` for none)."""
    split = [path.split("/")[:-1] for path in paths]
    common: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def _check_matched(
    called: dict[str, nn.Module],
    layers: tuple[type, ...],
    given_layers: tuple[type, ...],
    patterns: tuple[str, ...],
) -> None:
    """Raises for an ``exclude`` pattern, or a type given in ``layers``, that matches
    nothing in the model (``called``: every module it called, by path)."""
    kinds = [path for path, module in called.items() if isinstance(module, layers)]
    if not kinds:
        return  # no listed layer at all: _check_placement says so
    prefixes = {  # the layers' paths and the modules around them
        "/".join(parts[:i]) for parts in (path.split("/") for path in kinds if path)
        for i in range(1, len(parts) + 1)
    }  # fmt: skip
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            shown = ", ".join(kinds[:_MAX_LISTED_PATHS])
            more = len(kinds) - _MAX_LISTED_PATHS
            raise ValueError(
                f"with_nodes: exclude pattern {pattern!r} matches no layer of the model, so it "
                "would leave nothing out. exclude takes fnmatch patterns of module paths (a "
                "pattern that matches a module leaves out every layer inside it); the model's "
                f"layers of the listed types are: {shown}"
                + (f" and {more} more" if more > 0 else "")
                + "."
            )
    for kind in given_layers:
        if not any(isinstance(module, kind) for module in called.values()):
            by_type: dict[str, list[str]] = {}
            for path, module in called.items():
                if path:  # the model itself
                    by_type.setdefault(type(module).__name__, []).append(path)
            there = "; ".join(f"{name} ({_listed(paths)})" for name, paths in by_type.items())
            raise ValueError(
                f"with_nodes: layers lists {kind.__name__}, but the model calls no "
                f"{kind.__name__} layer (nor a subclass's), so it would place nothing there. "
                f"The modules the model calls: {there}."
            )


def _check_placement(placement: data_flow.Placement, layers: tuple[type, ...]) -> None:
    """Raises if ``placement`` puts no node anywhere (and the model has none), saying why."""
    if placement.names or placement.hand_written:
        return
    if not placement.paths and not placement.skipped:
        names = ", ".join(t.__name__ for t in layers)
        raise ValueError(
            f"with_nodes: the model called no layer of the types listed in layers ({names}), "
            "so there is nowhere to put a value node; list the layer types the model uses."
        )
    reasons = [
        f"{'/'.join(path)}: {reason}" for path, reason in zip(placement.paths, placement.reasons)
    ]
    if placement.skipped:
        reasons.append(_skipped_message(placement))
    raise ValueError(
        "with_nodes could place no value node, so predictive coding would be plain backprop. "
        "Layer by layer: " + "; ".join(reasons)
    )
