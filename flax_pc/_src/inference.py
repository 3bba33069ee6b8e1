"""Pure functions of predictive coding: node initialisation, energy, inference.

All functions take the model's ``apply_fn`` (``model.apply``) and its params
explicitly; nothing is stored between calls. ``PCTrainState`` is a thin
wrapper over them, and users who write their own loops call them directly.

Convention: the energy that is minimised is the **total over the batch**,

    F = sum_b [ sum_l pi_l * E_l(v_l^b, mu_l^b) + E_out(y^b, out^b) ],

so ``dF/dv^b`` depends on example ``b`` alone (node dynamics do not depend on
the batch size) and ``dF/dparams`` is the gradient of the batch-summed energy.

Models with state and randomness: every function takes ``model_state`` (the
model's non-param collections, e.g. ``{'batch_stats': ...}``; the model may
update them in the call, and those updates are discarded here) and ``rng`` (a
key, which feeds :data:`~flax_pc.NODE_RNG` and ``'dropout'``, or a dict ``{stream: key}``).
Passing the same ``rng`` to every call of one batch gives every call the same
dropout mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import errors as flax_errors
from flax import traverse_util
from flax.core import meta

from flax_pc import energies as _energies
from flax_pc._src import batches, langevin, lost_nodes
from flax_pc._src.nodes import ENERGIES, NODE_RNG, NODES, NewLatent, StackedEnergy
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["Energy", "energy", "infer", "init_nodes", "node_energies"]

#: The RNG streams that a bare key feeds (each gets a key derived from it):
#: node initialisation (``PCNode(value_init='normal')``) and ``nn.Dropout``.
RNG_STREAMS: tuple[str, ...] = (NODE_RNG, "dropout")


#: The most inference steps that ``unroll=None`` unrolls (see :func:`resolve_unroll`).
MAX_UNROLLED_STEPS = 32


def resolve_unroll(unroll: int | bool | None, inference_steps: int) -> int | bool:
    """The ``unroll`` of the inference loop's ``lax.scan``; ``None`` lets flax_pc choose.

    The rule for ``None``: **every step unrolled for ``T <= 32``, a rolled loop
    (``unroll=1``) for ``T > 32``**, so compile time stays bounded whatever ``T``.
    Unrolled, XLA:CPU runs convolution gradients on its fast path (inside a
    loop they are several times slower, jax-ml/jax#12868) for a compile that
    costs little more than the rolled loop's up to ``T = 32``; beyond that an
    unrolled loop's compile time grows faster than ``T`` while a rolled loop's
    stays flat. A conv net on CPU that needs ``T > 32`` steps and can afford
    the compile passes ``unroll=True``. The figures are in benchmarks/README.md
    ("Compile time and T"), from ``benchmarks/compile_time.py``.
    """
    if unroll is None:
        return True if inference_steps <= MAX_UNROLLED_STEPS else 1
    return check_unroll(unroll)


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


def as_rngs(rng: RNG | None, streams: Sequence[str] = RNG_STREAMS) -> dict[str, Array] | None:
    """Linen's ``rngs`` from a key or a dict.

    Args:
      rng: ``None``; a PRNG key, from which each of ``streams`` gets its own
        derived key; or a dict ``{stream: key}`` (linen's ``rngs=``), used as is.
      streams: the streams a bare key feeds (default :data:`RNG_STREAMS`).

    Returns:
      ``{stream: key}``, or ``None`` for ``rng=None``.

    Example:
      >>> import jax
      >>> sorted(as_rngs(jax.random.key(0)))
      ['dropout', 'pc_noise']
    """
    if rng is None:
        return None
    if isinstance(rng, Mapping):
        return {stream: as_key(key, f"rng[{stream!r}]") for stream, key in rng.items()}
    keys = jax.random.split(as_key(rng, "rng"), len(streams))
    return {stream: keys[i] for i, stream in enumerate(streams)}


def as_key(rng: Any, name: str) -> Array:
    """A PRNG key from a key or an int seed (``0``: ``jax.random.key(0)``, as ``nnx.Rngs(0)``)."""
    if isinstance(rng, bool):
        raise TypeError(
            f"{name} must be a PRNG key (jax.random.key(0)) or an int seed, got {rng!r}."
        )
    if isinstance(rng, int):
        return jax.random.key(rng)
    shape, dtype = jnp.shape(rng), getattr(rng, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
        return rng
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and shape == ():
        return jax.random.key(rng)  # a seed, e.g. a traced int
    if dtype == jnp.uint32 and shape == (2,):
        return rng  # a raw key of jax.random.PRNGKey
    raise TypeError(
        f"{name} must be one PRNG key, jax.random.key(0), or an int seed; got "
        f"{type(rng).__name__} of shape {tuple(shape)}."
    )


def check_model_state(model_state: Any) -> dict[str, PyTree]:
    """``model_state`` as a plain dict of collections; raises on a bad one.

    flax_pc's own collections (:data:`~flax_pc.NODES`, :data:`~flax_pc.ENERGIES`:
    per batch, made by flax_pc) are left out, so everything but ``'params'``
    of ``model.init(...)`` can be passed as it is.
    """
    if model_state is None:
        return {}
    if not isinstance(model_state, Mapping):
        raise TypeError(
            "model_state must be a dict of the model's non-param collections, e.g. "
            f"{{'batch_stats': variables['batch_stats']}}; got {type(model_state).__name__}."
        )
    if "params" in model_state:
        raise ValueError(
            "model_state holds 'params': it is for the model's other collections (e.g. "
            "'batch_stats'); the params are passed apart."
        )
    kept = {k: v for k, v in model_state.items() if k not in (NODES, ENERGIES)}
    return meta.unbox(_plain_dicts(kept))


def _plain_dicts(tree: Any) -> Any:
    # FrozenDicts in, dicts out of apply: one type, so jit and scan see one structure.
    if isinstance(tree, Mapping):
        return {key: _plain_dicts(value) for key, value in tree.items()}
    return tree


def _quoted(message: str, after: str) -> str:
    match = re.search(after + r' "([^"]+)"', message)
    return match[1] if match else "?"


def apply_model(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    *,
    nodes: PyTree = None,
    model_state: Mapping[str, PyTree] | None = None,
    rngs: Mapping[str, Array] | None = None,
    mutable: Sequence[str] = (),
) -> tuple[Any, dict[str, PyTree]]:
    """Calls the model the way every flax_pc function does.

    The model gets ``params``, ``nodes`` (if any) and ``model_state``; the
    ``mutable`` collections and those of ``model_state`` are mutable. Flax's
    errors for a missing RNG stream or collection become one clear error.

    Returns:
      ``(output, collections)``: the model's output and the mutable collections
      it returned (those of ``model_state`` included).
    """
    model_state = model_state or {}
    variables = {"params": params, **model_state}
    if nodes:
        variables[NODES] = nodes
    mutable = [*mutable, *model_state]
    try:
        if mutable:
            output, collections = apply_fn(variables, inputs, mutable=mutable, rngs=rngs)
            return output, dict(collections)
        return apply_fn(variables, inputs, rngs=rngs), {}
    except flax_errors.InvalidRngError as error:
        stream = _quoted(str(error), "PRNG for")
        hint = (
            "rng=key (a bare key feeds " + " and ".join(repr(s) for s in RNG_STREAMS) + ")"
            if stream in RNG_STREAMS
            else f"rng={{{stream!r}: key, ...}} (a dict of every stream the model draws from)"
        )
        raise ValueError(
            f"The model draws random numbers from the RNG stream {stream!r} but no key was "
            f"given for it: pass {hint} to train_step, train_epoch or the flax_pc function "
            f"you called. ({error})"
        ) from None
    except (flax_errors.ScopeCollectionNotFound, flax_errors.ModifyScopeVariableError) as error:
        collection = _quoted(str(error), "collection")
        raise ValueError(
            f"The model uses the variable collection {collection!r} (e.g. BatchNorm's "
            f"running averages), which flax_pc was not given: pass model_state="
            f"{{{collection!r}: variables[{collection!r}]}} (PCTrainState.create(..., "
            f"model_state=...), or model_state= to the flax_pc function you called), with "
            f"variables = model.init(...). ({error})"
        ) from None


def initialize(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    *,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> InitialNodes:
    """:func:`init_nodes`, and whether every node was forward initialised.

    Raises if a ``PCNode`` sits in a lifted transform that would drop its value
    (see :func:`~flax_pc._src.lost_nodes.no_node_lost`).
    """
    with lost_nodes.no_node_lost():
        # ENERGIES mutable too: a transform that does not carry it shows it here.
        _, collections = apply_model(
            apply_fn, params, inputs, model_state=check_model_state(model_state),
            rngs=as_rngs(rng), mutable=[NODES, ENERGIES],
        )  # fmt: skip
    boxed = collections.get(NODES, {})
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
    says (``'forward'``: ``v = mu``, so every hidden energy is zero).

    Args:
      apply_fn: the model's ``apply``.
      params: the model's params.
      inputs: a batch of inputs, ``[B, ...]``, or any pytree of such arrays
        (the model's one input argument).
      model_state: the model's other collections, e.g. ``{'batch_stats': ...}``.
      rng: a key, an int seed or ``{stream: key}``, for nodes with
        ``value_init='normal'`` (stream :data:`~flax_pc.NODE_RNG`) and for dropout.

    Returns:
      The :data:`~flax_pc.NODES` collection (``{}`` for a model without nodes).
    """
    return initialize(apply_fn, params, inputs, model_state=model_state, rng=rng).nodes


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
                "picks them, e.g. output_energy=lambda targets, output: "
                "fpc.energies.cross_entropy(targets, output[0]) for a model that returns "
                "(logits, extras)."
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
        fpc.energies.cross_entropy(y, out[0])`` for a model returning a tuple).
      model_state: the model's other collections (their updates are discarded).
      rng: a key (or int seed) or ``{stream: key}`` for the model's random layers (dropout).

    Returns:
      An :class:`Energy`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return nn.Dense(2)(fpc.PCNode()(nn.tanh(nn.Dense(8)(x))))
      >>> model, x, y = MLP(), jnp.ones((3, 4)), jnp.zeros((3, 2))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> nodes = fpc.init_nodes(model.apply, params, x)
      >>> e = fpc.energy(model.apply, params, nodes, x, y)
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
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> Callable[[PyTree], tuple[Array, Energy]]:
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


def check_steps(inference_steps: Any) -> int:
    """``inference_steps`` if it is an int >= 0; raises otherwise."""
    if isinstance(inference_steps, bool) or not isinstance(inference_steps, int):
        raise TypeError(
            f"inference_steps must be a Python int >= 0, got {inference_steps!r} "
            f"({type(inference_steps).__name__})."
        )
    if inference_steps < 0:
        raise ValueError(f"inference_steps must be >= 0, got {inference_steps}.")
    return inference_steps


def check_transform(tx: Any, name: str) -> None:
    """Raises unless ``tx`` is an optax transform; ``name`` is the argument's."""
    if not (hasattr(tx, "init") and hasattr(tx, "update") and callable(tx.update)):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation (e.g. optax.sgd(0.01)), "
            f"got {type(tx).__name__}."
        )


def check_unroll(unroll: Any) -> int | bool:
    """``unroll`` if it is a bool or an int >= 1 (``lax.scan``'s); raises otherwise."""
    if isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1):
        return unroll
    raise ValueError(
        f"unroll must be None (flax_pc chooses), True (unroll every inference step), False "
        f"or an int >= 1 (steps per loop iteration), got {unroll!r}."
    )


def infer(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    node_tx: optax.GradientTransformation,
    inference_steps: int,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
    unroll: int | bool | None = None,
) -> tuple[PyTree, Energy]:
    """Runs ``inference_steps`` steps of ``node_tx`` on the nodes.

    Each step takes ``g = dF/dnodes`` (``F`` summed over the batch, so ``g`` is
    per example) at the current nodes and applies ``node_tx``'s update. The
    optimiser state starts from ``node_tx.init(nodes)``. The steps run as one
    ``lax.scan``, compiled once whatever ``inference_steps`` is, and unrolled
    as ``unroll`` says.

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy, model_state: as
        in :func:`energy`.
      node_tx: an optax transform for the nodes, e.g. ``optax.sgd(0.01)``.
      inference_steps: ``T >= 0``, a Python int.
      rng: a key (or int seed) or ``{stream: key}``; the same keys at every
        step, so a dropout layer keeps one mask and inference descends one
        energy. A ``node_tx`` that draws noise (:func:`~flax_pc.langevin`)
        gets a new key at every step, made from the :data:`~flax_pc.NODE_RNG` key.
      unroll: ``lax.scan``'s ``unroll``: ``None`` (default: every step
        unrolled for ``T <= 32``, a rolled loop beyond; see
        ``inference.resolve_unroll``), ``True`` (every step), ``False``, or
        steps per loop iteration.

    Returns:
      ``(nodes, energies)``: the nodes after ``T`` steps, and the
      :class:`Energy` *before* each step, stacked (leading axis ``T``).

    Example:
      A PCNode works in ``nn.Sequential`` too:

      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> model = nn.Sequential([nn.Dense(8), nn.tanh, fpc.PCNode(), nn.Dense(2)])
      >>> inputs, targets = jnp.ones((3, 4)), jnp.zeros((3, 2))
      >>> params = model.init(jax.random.key(0), inputs)["params"]
      >>> start = fpc.init_nodes(model.apply, params, inputs)
      >>> nodes, energies = fpc.infer(model.apply, params, start, inputs, targets,
      ...                             node_tx=optax.sgd(0.1), inference_steps=5)
      >>> energies.total.shape  # the total energy before each of the 5 steps
      (5,)
      >>> bool(energies.total[-1] < energies.total[0])
      True
    """
    return run_inference(
        apply_fn, params, nodes, inputs, targets, node_tx=node_tx,
        inference_steps=inference_steps, output_energy=output_energy,
        model_state=model_state, rng=rng, unroll=unroll, forward_initialized=False,
    )  # fmt: skip


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


def run_inference(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    node_tx: optax.GradientTransformation,
    inference_steps: int,
    output_energy: OutputEnergyFn,
    model_state: Mapping[str, PyTree] | None,
    rng: RNG | None,
    unroll: int | bool | None,
    forward_initialized: bool,
) -> tuple[PyTree, Energy]:
    """:func:`infer`, with the first-step shortcut of a forward initialisation.

    ``forward_initialized`` is ``InitialNodes.forward`` of the :func:`initialize`
    call that made ``nodes``, never a caller's claim: every hidden error is
    then zero, so ``dF/dv`` at the first step is that of the output energy
    alone, which reaches only the last hidden node, and the first step costs
    one backward pass through the output layer instead of a forward and a
    backward pass through the whole network. The shortcut is taken only where
    it is exact: where, besides, every sown energy is a node's
    (:func:`only_node_energies`; not with an :class:`~flax_pc.EnergyTerm`).

    Every node update gets the step's noise key (``key=``, see
    :mod:`flax_pc._src.langevin`) where ``rng`` holds a
    :data:`~flax_pc.NODE_RNG` key.
    """
    inference_steps = check_steps(inference_steps)
    check_transform(node_tx, "node_tx")
    unroll = resolve_unroll(unroll, inference_steps)
    model_state = check_model_state(model_state)
    rngs = as_rngs(rng)
    total = energy_of_nodes(
        apply_fn, params, inputs, targets,
        output_energy=output_energy, model_state=model_state, rng=rngs,
    )  # fmt: skip

    noise = langevin.noise_key(rngs)

    def step(carry, index):
        nodes, opt_state = carry
        grads, result = jax.grad(total, has_aux=True)(nodes)
        updates, opt_state = langevin.update_nodes(
            node_tx, grads, opt_state, nodes, langevin.step_key(noise, index)
        )
        return (optax.apply_updates(nodes, updates), opt_state), result

    opt_state = node_tx.init(nodes)
    if inference_steps == 0:
        # Shapes of the (empty) energy trajectory without running a step.
        shapes = jax.eval_shape(lambda n: total(n)[1], nodes)
        empty = jax.tree_util.tree_map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)
        return nodes, empty
    if not (forward_initialized and only_node_energies(total, nodes)):
        (nodes, _), energies = jax.lax.scan(
            step, (nodes, opt_state), jnp.arange(inference_steps), unroll=unroll
        )
        return nodes, energies

    batch_size = batches.check_batch(inputs, targets)

    def output_total(nodes):
        output, _ = apply_model(
            apply_fn, params, inputs, nodes=nodes, model_state=model_state, rngs=rngs
        )
        per_example = output_energy_of(output_energy, targets, output, batch_size)
        return jnp.sum(per_example), (per_example, output)

    grads, (per_example, output) = jax.grad(output_total, has_aux=True)(nodes)
    updates, opt_state = langevin.update_nodes(
        node_tx, grads, opt_state, nodes, langevin.step_key(noise, 0)
    )
    nodes = optax.apply_updates(nodes, updates)
    (nodes, _), rest = jax.lax.scan(
        step, (nodes, opt_state), jnp.arange(1, inference_steps), unroll=unroll
    )
    first = Energy(
        total=jnp.sum(per_example),
        per_example=per_example,
        nodes=jax.tree_util.tree_map(lambda e: jnp.zeros(e.shape[1:], e.dtype), rest.nodes),
        output=per_example,
        output_prediction=output,
    )
    energies = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return nodes, energies
