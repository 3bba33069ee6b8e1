"""Temporal predictive coding: the latent inferred at each step is the next step's input.

The public module :mod:`flax_pc.temporal` documents the model these functions
take and exports them. Each time step is an ordinary PC network's node
initialisation, inference and (when training) weight step, on the model
called with the previous latent; one ``lax.scan`` over time carries the
latent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from flax_pc import energies as _energies
from flax_pc._src import batches, equilibrium, initialization, network_energy, train_state
from flax_pc._src.inference import Inference, from_keywords, run_inference
from flax_pc._src.model_calls import apply_model, check_model_state
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["SequenceResult", "infer_sequence", "predict_sequence", "train_sequence"]

#: How :func:`~flax_pc.temporal.train_sequence` applies the weight gradients.
Update = Literal["step", "sequence"]
UPDATES: tuple[str, ...] = ("step", "sequence")

#: ``latent=``: the carried node's path in :data:`~flax_pc.NODES`, or ``nodes -> latent``.
LatentSpec = str | Callable[[PyTree], PyTree]


class SequenceResult(NamedTuple):
    """What ``infer_sequence`` and ``train_sequence`` return; time is the leading axis.

    Attributes:
      latents: the latent inferred at each step (the one carried to the next
        step), ``[T, *latent shape]``: the filtered estimates ``z_1 ... z_T``.
      predictions: the model's output before each step's inference (the
        feed-forward pass from the previous latent and the step's control),
        ``[T, *output shape]``: the one-step-ahead prediction of each
        observation, made before it is seen.
      energy: the :class:`~flax_pc.Energy` after each step's inference,
        stacked: ``energy.total`` ``[T]`` (summed over the batch),
        ``energy.per_example`` ``[T, B]``, each node's energy in
        ``energy.nodes`` ``[T, B]`` (:func:`flax_pc.node_energies` sums it
        over time).
      steps: int ``[T]``, the inference steps taken at each time step
        (``inference.steps``, or fewer to a tolerance).
    """

    latents: PyTree
    predictions: PyTree
    energy: network_energy.Energy
    steps: Array


def carried_latent(nodes: PyTree, latent: LatentSpec) -> PyTree:
    """The latent that step ``t`` hands to step ``t+1``: ``latent``'s node value in ``nodes``.

    Args:
      nodes: the :data:`~flax_pc.NODES` collection after a step's inference.
      latent: the node's path (``'latent'``, ``'Block_0/latent'``), whose
        ``'value'`` is carried; or a function ``nodes -> latent`` (any pytree).
    """
    if callable(latent):
        return latent(nodes)
    if not isinstance(latent, str):
        raise TypeError(
            f"latent must be the carried node's path in the nodes (a str such as 'latent') or "
            f"a function nodes -> latent, got {type(latent).__name__}."
        )
    flat = traverse_util.flatten_dict(nodes, sep="/")
    if f"{latent}/value" in flat:
        return flat[f"{latent}/value"]
    if f"{latent}/error" in flat:
        raise ValueError(
            f"The node {latent!r} stores its error (PCNode(latent='error')), not its value: "
            "temporal PC carries the value. Use a PCNode with latent='value' for the carried "
            "latent, or pass latent=a function nodes -> latent."
        )
    paths = sorted({path.rsplit("/", 1)[0] for path in flat})
    raise ValueError(
        f"latent={latent!r} names no node of the model; its nodes are {paths}. Name the "
        "node whose value is carried to the next step (e.g. fpc.PCNode(name='latent'))."
    )


def _time_length(tree: PyTree, name: str) -> int | None:
    """The leading (time) axis every array of ``tree`` shares; ``None`` for ``tree=None``."""
    if tree is None:
        return None
    sizes = batches.leading_sizes(tree)
    if not sizes or None in sizes.values():
        raise ValueError(
            f"{name} must be arrays [T, B, ...] (time first, then the batch), got "
            f"{batches.describe(tree)} with a scalar or no array."
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"The arrays of {name} differ in length along time (axis 0): {sizes}.")
    return next(iter(sizes.values()))


def sequence_length(observations: PyTree, controls: PyTree, length: int | None = None) -> int:
    """``T``, from the observations, the controls and ``length``; raises unless they agree."""
    given = {
        "observations": _time_length(observations, "observations"),
        "controls": _time_length(controls, "controls"),
        "length": length,
    }
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise TypeError(f"length must be a Python int > 0, got {length!r}.")
    known = {name: size for name, size in given.items() if size is not None}
    if not known:
        raise ValueError("The sequence has no length: give controls [T, B, ...] or length=T.")
    if len(set(known.values())) > 1:
        raise ValueError(
            f"The sequence lengths disagree: {', '.join(f'{k} {v}' for k, v in known.items())}."
        )
    size = next(iter(known.values()))
    if size < 1:
        raise ValueError(f"The sequence must have at least one step, got T = {size}.")
    return size


def model_input(previous: PyTree, control: PyTree) -> PyTree:
    """What the model is called with at a step: ``(previous, control)``, or ``previous`` alone."""
    return previous if control is None else (previous, control)


def _step_rngs(rngs: dict[str, Array] | None, t: Array) -> dict[str, Array] | None:
    """The keys of step ``t``: each stream's key folded with ``t`` (new noise every step)."""
    if rngs is None:
        return None
    return {stream: jax.random.fold_in(key, t) for stream, key in rngs.items()}


def _initial_carry(apply_fn, params, initial, controls, latent, model_state, rngs) -> PyTree:
    """``initial`` as arrays of the carried latent's dtypes; raises unless their shapes match.

    The carried latent is the latent a step hands on, its shapes and dtypes
    those after the first step's node initialisation (``_first_step_shapes``);
    ``lax.scan`` needs the carry to keep them.
    """
    carried = _first_step_shapes(apply_fn, params, initial, controls, latent, model_state, rngs)
    initial = batches.as_arrays(initial)
    shapes = jax.tree_util.tree_map(jnp.shape, initial)
    wanted = jax.tree_util.tree_map(lambda s: tuple(s.shape), carried)
    same_structure = jax.tree_util.tree_structure(initial) == jax.tree_util.tree_structure(carried)
    if not same_structure or shapes != wanted:
        raise ValueError(
            f"initial must have the shape of the carried latent, {wanted}, got {shapes}: the "
            "latent inferred at one step is the input of the next."
        )
    return jax.tree_util.tree_map(lambda a, s: a.astype(s.dtype), initial, carried)


def _first_step_shapes(apply_fn, params, initial, controls, latent, model_state, rngs):
    """The carried latent's shapes after the first step's node initialisation (traced only)."""
    control = None if controls is None else jax.tree_util.tree_map(lambda c: c[0], controls)

    def first(initial, control):
        nodes = initialization.initialize(
            apply_fn,
            params,
            model_input(initial, control),
            model_state=model_state,
            rng=step_rngs,
        ).nodes
        return carried_latent(nodes, latent)

    step_rngs = _step_rngs(rngs, jnp.zeros((), jnp.int32))
    return jax.eval_shape(first, batches.as_arrays(initial), control)


class _Step(NamedTuple):
    """One time step's inference: the nodes it settles at and what is reported of it."""

    nodes: PyTree
    prediction: PyTree
    collections: dict[str, PyTree]
    steps: Array


def _infer_step(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    inference: Inference,
    output_energy: OutputEnergyFn,
    model_state: dict[str, PyTree],
    rng: dict[str, Array] | None,
) -> _Step:
    """Forward initialisation from ``inputs``, then ``inference`` with ``targets`` clamped."""
    initial = initialization.initialize(apply_fn, params, inputs, model_state=model_state, rng=rng)
    prediction, collections = apply_model(
        apply_fn, params, inputs, model_state=model_state, rngs=rng
    )
    if not initial.nodes:
        raise ValueError(
            "The model has no value nodes (flax_pc.PCNode): temporal PC carries a node's value "
            "from step to step. Put fpc.PCNode(name='latent') where the latent is."
        )
    if inference.to_equilibrium:
        result = equilibrium.infer_to_equilibrium(
            apply_fn, params, initial.nodes, inputs, targets, inference=inference,
            output_energy=output_energy, model_state=model_state, rng=rng,
        )  # fmt: skip
        return _Step(result.nodes, prediction, collections, result.steps)
    nodes, _ = run_inference(
        apply_fn, params, initial.nodes, inputs, targets, inference=inference,
        output_energy=output_energy, model_state=model_state, rng=rng,
        forward_initialized=initial.forward,
    )  # fmt: skip
    return _Step(nodes, prediction, collections, jnp.asarray(inference.steps, jnp.int32))


def infer_sequence(
    apply_fn: ApplyFn,
    params: PyTree,
    initial: PyTree,
    observations: PyTree,
    *,
    inference: Inference | None = None,
    controls: PyTree = None,
    latent: LatentSpec = "latent",
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> SequenceResult:
    """Temporal PC inference over a sequence (filtering), the weights fixed.

    For ``t = 1 ... T``: the model is called with the latent inferred at
    ``t-1`` (``initial`` at ``t = 1``) and ``controls[t]``; its nodes start
    at their prediction and ``inference`` settles them with
    ``observations[t]`` clamped through ``output_energy``
    (:func:`flax_pc.infer`, or :func:`flax_pc.infer_to_equilibrium` for an
    ``Inference`` with a tolerance); the ``latent`` node's value is then the
    next step's input. One ``lax.scan`` over time; call it under ``jax.jit``.

    With a linear-Gaussian model (``z_t = A z_{t-1} + B u_t + noise``,
    ``y_t = C z_t + noise``, the node's and output's precisions the inverse
    noise variances) each step's equilibrium is the MAP estimate of ``z_t``
    given ``y_t`` and the previous estimate: a Kalman filter whose prior
    covariance is the process noise's, not propagated.

    Args:
      apply_fn: the model's ``apply``. The model takes ``(previous, control)``
        when ``controls`` are given, ``previous`` alone otherwise.
      params: the model's params.
      initial: the latent before the first step, ``[B, *latent features]``
        (the carried latent's shape).
      observations: ``[T, B, ...]`` (time first), or a pytree of such arrays:
        the targets of each step, as ``output_energy`` takes them.
      inference: how the nodes settle at each step, an
        :class:`~flax_pc.Inference` (a fixed number of steps, or a tolerance).
      controls: ``None``, or the inputs of each step ``[T, B, ...]`` (any
        pytree of such arrays).
      latent: the path of the carried node in :data:`~flax_pc.NODES`
        (``'latent'`` for ``fpc.PCNode(name='latent')``; ``'Block_0/latent'``
        inside a submodule), whose value is carried; or a function
        ``nodes -> previous`` that picks any pytree of node values.
      output_energy: ``energy(observation, output) -> [B]``.
      model_state: the model's other collections (not updated here).
      rng: a key, an int seed or ``{stream: key}``; step ``t`` gets each
        stream's key folded with ``t``.

    Returns:
      A :class:`~flax_pc.temporal.SequenceResult`.

    Example:
      A scalar random walk observed with noise; the estimates move towards the data:

      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> class Walk(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, previous):
      ...         return fpc.PCNode(name="latent")(previous)  # z_t ~ N(z_{t-1}, 1), y_t ~ N(z_t, 1)
      >>> model, z0 = Walk(), jnp.zeros((1, 1))
      >>> params = model.init(jax.random.key(0), z0).get("params", {})
      >>> ys = jnp.ones((3, 1, 1))  # T = 3 observations of 1
      >>> result = fpc.temporal.infer_sequence(model.apply, params, z0, ys,
      ...     inference=fpc.Inference(optax.sgd(0.5), 50))
      >>> [round(float(z), 3) for z in result.latents[:, 0, 0]]  # z_t = (z_{t-1} + 1) / 2
      [0.5, 0.75, 0.875]
    """
    inference = _check_inference("fpc.temporal.infer_sequence", inference)
    length = sequence_length(observations, controls)
    model_state = check_model_state(model_state)
    rngs = as_rngs(rng)
    initial = _initial_carry(apply_fn, params, initial, controls, latent, model_state, rngs)

    def step(previous, xs):
        t, observation, control = xs
        inputs, step_rngs = model_input(previous, control), _step_rngs(rngs, t)
        result = _infer_step(
            apply_fn, params, inputs, observation, inference=inference,
            output_energy=output_energy, model_state=model_state, rng=step_rngs,
        )  # fmt: skip
        final = network_energy.energy(
            apply_fn, params, result.nodes, inputs, observation,
            output_energy=output_energy, model_state=model_state, rng=step_rngs,
        )  # fmt: skip
        new = carried_latent(result.nodes, latent)
        return new, (new, result.prediction, final, result.steps)

    xs = (jnp.arange(length), observations, controls)
    _, (latents, predictions, energies, steps) = jax.lax.scan(step, initial, xs)
    return SequenceResult(latents, predictions, energies, steps)


def train_sequence(
    state: train_state.PCTrainState,
    initial: PyTree,
    observations: PyTree,
    *,
    controls: PyTree = None,
    latent: LatentSpec = "latent",
    update: Update = "step",
    rng: RNG | None = None,
) -> tuple[train_state.PCTrainState, SequenceResult]:
    """Temporal PC learning over a sequence: ``infer_sequence`` plus weight steps.

    At each step ``t`` the nodes settle as in :func:`~flax_pc.temporal.infer_sequence` (with
    ``state.inference`` and ``state.output_energy``); the weight gradient is
    ``dF_t/dparams`` at the settled nodes, the previous latent held fixed, as
    ``state.train_step`` takes it. ``update='step'`` applies it at once
    (``state.tx``; the next step infers with the new weights: online
    learning, one weight step per time step); ``update='sequence'`` sums
    the ``T`` gradients, taken with the weights of the sequence's start, and
    applies them in one step at the end. One ``lax.scan`` over time; call it
    under ``jax.jit``.

    The model state (BatchNorm's running averages) moves as in
    ``state.train_step``, from each step's feed-forward pass.

    Args:
      state: a :class:`~flax_pc.PCTrainState` with ``algorithm='pc'`` and no
        ``nudging``.
      initial, observations, controls, latent: as in :func:`~flax_pc.temporal.infer_sequence`.
      update: ``'step'`` or ``'sequence'`` (above).
      rng: as ``state.train_step``'s (an int seed is folded with
        ``state.step``); step ``t`` gets each key folded with ``t``.

    Returns:
      ``(state, result)``: the state after the weight steps (``T`` of them,
      or one), and the :class:`~flax_pc.temporal.SequenceResult` of the inference (its
      ``energy`` at the weights each step's gradient was taken at).
    """
    if not isinstance(state, train_state.PCTrainState):
        raise TypeError(
            f"fpc.temporal.train_sequence takes a flax_pc.PCTrainState, got {type(state).__name__}."
        )
    if state.algorithm != "pc" or state.nudging is not None:
        raise ValueError(
            "fpc.temporal.train_sequence runs temporal PC (infer, then a weight step at the "
            f"settled nodes): it needs a PCTrainState with algorithm='pc' and no nudging, got "
            f"algorithm={state.algorithm!r}, nudging={state.nudging!r}."
        )
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}.")
    inference = _check_inference("fpc.temporal.train_sequence", state.inference)
    length = sequence_length(observations, controls)
    rngs = as_rngs(rng, step=state.step)
    initial = _initial_carry(
        state.apply_fn, state.params, initial, controls, latent, state.model_state, rngs
    )

    def step(carry, xs):
        state, previous, summed = carry
        t, observation, control = xs
        inputs, step_rngs = model_input(previous, control), _step_rngs(rngs, t)
        result = _infer_step(
            state.apply_fn, state.params, inputs, observation, inference=inference,
            output_energy=state.output_energy, model_state=state.model_state, rng=step_rngs,
        )  # fmt: skip

        def total(params, nodes):
            energy = network_energy.energy(
                state.apply_fn, params, nodes, inputs, observation,
                output_energy=state.output_energy, model_state=state.model_state, rng=step_rngs,
            )  # fmt: skip
            return energy.total, energy

        grads, final = train_state._weight_gradient(state, total, result.nodes)
        model_state = train_state._updated(state.model_state, result.collections)
        if update == "step":
            state = state.apply_gradients(grads=grads)
        else:
            summed = jax.tree_util.tree_map(jnp.add, summed, grads)
        state = state.replace(model_state=model_state)
        new = carried_latent(result.nodes, latent)
        return (state, new, summed), (new, result.prediction, final, result.steps)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    xs = (jnp.arange(length), observations, controls)
    (state, _, summed), (latents, predictions, energies, steps) = jax.lax.scan(
        step, (state, initial, zeros), xs
    )
    if update == "sequence":
        state = state.apply_gradients(grads=summed)
    return state, SequenceResult(latents, predictions, energies, steps)


def predict_sequence(
    apply_fn: ApplyFn, params: PyTree, initial: PyTree, *,
    length: int | None = None, controls: PyTree = None, latent: LatentSpec = "latent",
    model_state: Mapping[str, PyTree] | None = None, rng: RNG | None = None,
) -> tuple[PyTree, PyTree]:  # fmt: skip
    """Runs a temporal PC model forward from ``initial`` without observations (a roll-out).

    Each step's nodes take their predictions (no inference: nothing is
    clamped), so the latent follows the model's own dynamics
    ``z_t = f(z_{t-1}, u_t)`` and each output is the model's prediction of
    an observation: a learnt sequence recalled from its initial latent, or a
    dynamical system's forecast.

    Args:
      apply_fn, params, initial, latent, model_state, rng: as in
        :func:`~flax_pc.temporal.infer_sequence`.
      length: ``T``, the number of steps (given by ``controls`` where they are
        given).
      controls: ``None``, or the inputs of each step ``[T, B, ...]``.

    Returns:
      ``(latents, outputs)``: the latent ``[T, *latent shape]`` and the
      model's output ``[T, *output shape]`` at each step.
    """
    length = sequence_length(None, controls, length)
    model_state = check_model_state(model_state)
    rngs = as_rngs(rng)
    initial = _initial_carry(apply_fn, params, initial, controls, latent, model_state, rngs)

    def step(previous, xs):
        t, control = xs
        inputs, step_rngs = model_input(previous, control), _step_rngs(rngs, t)
        nodes = initialization.initialize(
            apply_fn, params, inputs, model_state=model_state, rng=step_rngs
        ).nodes
        output, _ = apply_model(
            apply_fn, params, inputs, nodes=nodes, model_state=model_state, rngs=step_rngs
        )
        new = carried_latent(nodes, latent)
        return new, (new, output)

    _, (latents, outputs) = jax.lax.scan(step, initial, (jnp.arange(length), controls))
    return latents, outputs


def _check_inference(function: str, inference: Any) -> Inference:
    """``inference`` if it is an :class:`~flax_pc.Inference`; raises otherwise."""
    checked = from_keywords(function, inference, {}, keywords=(), required=True)
    assert checked is not None
    return checked
