"""An NNX model as a linen ``apply``: how ``fpc.nnx`` shares the linen path's maths.

``bind`` splits an NNX model (``nnx.split``) into its trainable params,
its nodes and the rest of its state, and gives back a function with linen's
``apply`` contract,

    ``apply({'params': p, NODES: n, STATE: s}, inputs, mutable=[...], rngs={...})``,

that merges a copy of the model from those (``nnx.merge``), sets each
:class:`~flax_pc._src.nnx_nodes.PCNode`'s part in the call from the given and
mutable collections exactly as the linen ``PCNode`` reads them, calls it, and
returns the mutable collections (the nodes' energies captured from their
``sow``). Every pure function of the linen path (``initialization.initialize``,
``energy``, ``run_inference``, ``infer_to_equilibrium``, and
``PCTrainState.train_step``'s pc/ipc/bp/nudging logic) then runs on the NNX
model unchanged.

The model's state other than params and nodes (BatchNorm's running
averages, the RNG counts of ``nnx.Dropout``, any other variable) travels as
one collection, ``STATE`` (``'nnx_state'``), which the linen code treats as it treats
``model_state``: every pass of a batch starts from it (so a dropout layer
draws the same mask in every pass), and ``train_step`` keeps the state the
params-only feed-forward pass leaves (running averages and RNG counts move
once per step).

A linen model wrapped by ``nnx.bridge.ToNNX`` is bound to its own linen
``apply``, with the wrapper's variables as the collections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flax import nnx, traverse_util
from flax.nnx.bridge import variables as bridge_variables

from flax_pc._src.nnx_nodes import Mode, NodeEnergy, NodeRole, NodeValue, PCNode
from flax_pc._src.node_rules import DrawnValue
from flax_pc._src.nodes import ENERGIES, NODES
from flax_pc._src.types import Array, PyTree

#: The collection holding an NNX model's state other than params and nodes.
STATE = "nnx_state"

Path = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Bound:
    """An NNX model seen by the linen code.

    Attributes:
      apply: linen's ``apply`` contract over the model (see the module doc).
      params: the trainable variables (``nnx.state(model, wrt)``), pure arrays.
      model_state: the other collections (``{STATE: ...}``, or a ToNNX
        model's linen collections).
      node_paths: each node's path, ``'/'``-joined, in the model's order;
        ``None`` for a ToNNX model (its linen nodes are made by its calls).
      rng_streams: the streams a ToNNX model's linen ``apply`` draws keys from.
      write: ``write(params, model_state)`` puts them back into the model.
    """

    apply: Callable[..., Any]
    params: nnx.State
    model_state: dict[str, PyTree]
    node_paths: tuple[str, ...] | None
    rng_streams: Mapping[str, nnx.RngStream]
    write: Callable[[PyTree, Mapping[str, PyTree]], None]


def path_name(path: Path) -> str:
    """``('layers', 2)`` -> ``'layers/2'``: a node's name in metrics and energies."""
    return "/".join(str(part) for part in path)


def check_model(model: Any, function: str) -> nnx.Module:
    """``model`` if it is an NNX module; raises otherwise."""
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"fpc.nnx.{function} takes a Flax NNX model (an nnx.Module), got "
            f"{type(model).__name__}. For a linen model use flax_pc's top-level functions "
            "(fpc.PCTrainState, fpc.init_nodes, ...), or wrap it: "
            "nnx.bridge.ToNNX(linen_model, rngs=rngs).lazy_init(x)."
        )
    return model


def bind(model: nnx.Module, wrt: Any = nnx.Param) -> Bound:
    """The linen view of ``model`` (see the module doc); ``wrt``: the trainable variables."""
    if isinstance(model, nnx.bridge.ToNNX):
        return _bind_linen(model, wrt)
    return _bind_nnx(model, wrt)


def _nodes(model: nnx.Module) -> list[tuple[Path, PCNode]]:
    return [(path, node) for path, node in nnx.iter_modules(model) if isinstance(node, PCNode)]


def _lookup(tree: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _mutable(mutable: Any) -> tuple[str, ...]:
    if mutable is False or mutable is None:
        return ()
    if isinstance(mutable, str):
        return (mutable,)
    return tuple(mutable)


def _energies(sown: nnx.State) -> dict[str, Any]:
    """The captured ``NodeEnergy`` state as linen's ``ENERGIES`` collection (string keys)."""
    flat = {
        tuple(str(part) for part in path): variable.get_value()
        for path, variable in nnx.to_flat_state(sown)
    }
    return traverse_util.unflatten_dict(flat)


def _role(has_latent: bool, mutable: Sequence[str]) -> Mode | None:
    """A node's part in a call, from the collections, as linen's ``PCNode`` decides it."""
    if has_latent:
        return "energy" if ENERGIES in mutable else "value"
    if NODES in mutable:
        return "initialize"
    if ENERGIES in mutable:
        return "missing"
    return None


def _bind_nnx(model: nnx.Module, wrt: Any) -> Bound:
    graphdef, _, params, rest = nnx.split(model, NodeValue, wrt, ...)  # nodes: per call
    nodes = _nodes(model)
    latent_paths = [(*path, node.latent) for path, node in nodes]
    other = nnx.Not(nnx.Any(NodeValue, NodeEnergy, wrt))

    def run(variables, inputs, mutable, held, given):
        """Calls a copy of the model whose nodes hold ``held`` (latents if ``given``)."""
        node_vars = nnx.from_flat_state(
            [(path, NodeValue(latent)) for path, latent in zip(latent_paths, held)]
        )
        copy = nnx.merge(graphdef, node_vars, variables["params"], variables.get(STATE, {}))
        copy_nodes = _nodes(copy)
        for (path, node), has_latent in zip(copy_nodes, given):
            role = _role(has_latent, mutable)
            node.role = None if role is None else NodeRole(role, path_name(path))
        try:
            if ENERGIES in mutable:
                output, sown = nnx.capture(copy, NodeEnergy)(inputs)
            else:
                output, sown = copy(inputs), None
        finally:
            for _, node in copy_nodes:
                node.role = None
        collections: dict[str, Any] = {}
        if NODES in mutable:
            new = {}
            for path, node in copy_nodes:
                latent = getattr(node, node.latent).get_value()
                if latent is not None:
                    new[(*path, node.latent)] = latent
            collections[NODES] = traverse_util.unflatten_dict(new)
        if sown is not None:
            collections[ENERGIES] = _energies(sown)
        if STATE in mutable:
            collections[STATE] = nnx.to_pure_dict(nnx.state(copy, other))
        return output, collections

    def apply(
        variables: Mapping[str, Any],
        inputs: Any,
        *,
        mutable: Any = False,
        rngs: Mapping[str, Array] | None = None,
    ) -> Any:
        del rngs  # the nodes draw nothing (node initialisation draws); the rest is state
        mutable = _mutable(mutable)
        given_nodes = variables.get(NODES) or {}
        latents = [_lookup(given_nodes, path) for path in latent_paths]
        # A drawn value (node initialisation's second pass) is held for the node to make its
        # latent from, as linen's PCNode finds it in its mutable NODES collection.
        drawn = [isinstance(latent, DrawnValue) for latent in latents]
        held = [latent.value if d else latent for latent, d in zip(latents, drawn)]
        given = [latent is not None and not d for latent, d in zip(latents, drawn)]
        output, collections = run(variables, inputs, mutable, held, given)
        return (output, collections) if mutable else output

    def write(new_params: PyTree, model_state: Mapping[str, PyTree]) -> None:
        nnx.update(model, new_params)
        nnx.update(model, model_state[STATE])

    return Bound(
        apply=apply,
        params=nnx.as_pure(params),
        model_state={STATE: nnx.to_pure_dict(rest)},
        node_paths=tuple(path_name(path) for path, _ in nodes),
        rng_streams={},
        write=write,
    )


def _bind_linen(model: nnx.bridge.ToNNX, wrt: Any) -> Bound:
    """A linen model wrapped by ``ToNNX``: its own ``apply``, its variables as collections.

    The wrapper keeps each linen variable at its linen path with an NNX type
    per collection (``pc_nodes`` is :class:`NodeValue`, registered at import);
    the nodes ``lazy_init`` made are left out (each call brings its own), and
    the wrapper's ``nnx.Rngs`` feeds the linen streams (see ``rng_streams``).
    """
    module = model.to_nnx__module
    params, rest = nnx.state(model, wrt, nnx.Not(nnx.Any(NodeValue, wrt, nnx.RngState)))
    collections = bridge_variables.nnx_attrs_to_linen_vars(dict(rest))
    rngs = model.to_nnx__rngs
    streams = dict(rngs.items()) if isinstance(rngs, nnx.Rngs) else {}
    if "default" in streams and "params" not in streams:  # as ToNNX's own call names it
        streams["params"] = streams.pop("default")

    def apply(variables: Mapping[str, Any], inputs: Any, **kwargs: Any) -> Any:
        variables = {**variables, "params": nnx.to_pure_dict(variables["params"])}
        return module.apply(variables, inputs, **kwargs)

    def write(new_params: PyTree, model_state: Mapping[str, PyTree]) -> None:
        nnx.update(model, new_params)
        for collection in model_state.values():
            nnx.update(model, collection)

    return Bound(
        apply=apply,
        params=nnx.as_pure(params),
        model_state=collections,
        node_paths=None,
        rng_streams=streams,
        write=write,
    )
