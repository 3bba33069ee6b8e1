"""Temporal predictive coding for NNX models: ``fpc.nnx``'s twins of the sequence functions.

Each binds the NNX model to linen's ``apply`` contract (as every ``fpc.nnx``
function does) and runs the linen path's own sequence function, so an NNX
model and a linen model with the same weights give the same latents,
energies and weight steps. The model's nodes (:class:`~flax_pc.nnx.NodeValue`)
are left as they are: the latents of the sequence are returned.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from flax_pc import energies as _energies
from flax_pc._src import temporal
from flax_pc._src.inference import Inference
from flax_pc._src.nnx_apply import bind, check_model
from flax_pc._src.nnx_training import Rngs, _call_rngs, _node_key, _require_nodes
from flax_pc._src.train_state import PCTrainState
from flax_pc._src.types import OutputEnergyFn, PyTree

__all__ = ["infer_sequence", "predict_sequence", "train_sequence"]


def infer_sequence(
    model: nnx.Module,
    initial: PyTree,
    observations: PyTree,
    *,
    inference: Inference | None = None,
    controls: PyTree = None,
    latent: temporal.LatentSpec = "latent",
    output_energy: OutputEnergyFn = _energies.squared_error,
) -> temporal.SequenceResult:
    """Temporal PC inference over a sequence, the weights fixed.

    :func:`flax_pc.temporal.infer_sequence` on the NNX model.

    Args:
      model: an ``nnx.Module`` with :class:`~flax_pc.nnx.PCNode`\\ s; it takes
        ``(previous, control)`` when ``controls`` are given, ``previous``
        alone otherwise, and returns the prediction of the observation.
      initial: the latent before the first step, ``[B, *latent features]``.
      observations: ``[T, B, ...]``, time first.
      inference: how the nodes settle at each step, an :class:`~flax_pc.Inference`.
      controls: ``None``, or the inputs of each step ``[T, B, ...]``.
      latent: the carried node's path in the model (``'latent'`` for
        ``self.latent = fpc.nnx.PCNode()``), or a function ``nodes -> previous``.
      output_energy: ``energy(observation, output) -> [B]``.

    Returns:
      A :class:`~flax_pc.temporal.SequenceResult`.
    """
    model = check_model(model, "infer_sequence")
    bound = bind(model)
    _require_nodes(bound, "infer_sequence")
    return temporal.infer_sequence(
        bound.apply, bound.params, initial, observations, inference=inference,
        controls=controls, latent=latent, output_energy=output_energy,
        model_state=bound.model_state, rng=_call_rngs(bound, None, advance=False),
    )  # fmt: skip


def train_sequence(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    initial: PyTree,
    observations: PyTree,
    *,
    inference: Inference | None = None,
    controls: PyTree = None,
    output_energy: OutputEnergyFn = _energies.squared_error,
    latent: temporal.LatentSpec = "latent",
    update: temporal.Update = "step",
    rngs: Rngs | None = None,
) -> temporal.SequenceResult:
    """Temporal PC learning over a sequence (:func:`flax_pc.temporal.train_sequence`), in place.

    Call it inside your ``nnx.jit`` function. The weight steps update
    ``model`` and ``optimizer`` as ``fpc.nnx.train_step``'s does: ``T`` of them
    (``update='step'``) or one, of the gradients summed over the sequence
    (``update='sequence'``).

    Args:
      model, initial, observations, controls, latent, output_energy: as in
        :func:`infer_sequence`.
      optimizer: ``nnx.Optimizer(model, tx, wrt=nnx.Param)``.
      inference: how the nodes settle at each step, an :class:`~flax_pc.Inference`.
      update: ``'step'`` or ``'sequence'``.
      rngs: for the nodes' own randomness, as in ``fpc.nnx.train_step``.

    Returns:
      The :class:`~flax_pc.temporal.SequenceResult` of the inference.
    """
    model = check_model(model, "train_sequence")
    if not isinstance(optimizer, nnx.Optimizer):
        raise TypeError(
            "fpc.nnx.train_sequence: optimizer must be an nnx.Optimizer(model, tx, "
            f"wrt=nnx.Param), got {type(optimizer).__name__}."
        )
    bound = bind(model, optimizer.wrt)
    _require_nodes(bound, "train_sequence")
    state = PCTrainState.create(
        apply_fn=bound.apply, params=bound.params, tx=optimizer.tx, inference=inference,
        output_energy=output_energy, model_state=bound.model_state,
    )  # fmt: skip
    state = state.replace(opt_state=nnx.as_pure(optimizer.opt_state), step=optimizer.step[...])
    rng = _call_rngs(bound, _node_key(rngs, "train_sequence"), advance=True)
    state, result = temporal.train_sequence(
        state, initial, observations, controls=controls, latent=latent, update=update, rng=rng
    )
    bound.write(state.params, state.model_state)
    nnx.update(optimizer.opt_state, nnx.state(state.opt_state))
    optimizer.step[...] = state.step
    return result


def predict_sequence(
    model: nnx.Module,
    initial: PyTree,
    *,
    length: int | None = None,
    controls: PyTree = None,
    latent: temporal.LatentSpec = "latent",
) -> tuple[Any, Any]:
    """Runs the model forward from ``initial`` without observations.

    :func:`flax_pc.temporal.predict_sequence` on the NNX model.

    Args:
      model: as in :func:`infer_sequence`.
      initial: the latent before the first step.
      length: ``T`` (given by ``controls`` where they are given).
      controls: ``None``, or the inputs of each step ``[T, B, ...]``.
      latent: as in :func:`infer_sequence`.

    Returns:
      ``(latents, outputs)``, each with time first.
    """
    model = check_model(model, "predict_sequence")
    bound = bind(model)
    _require_nodes(bound, "predict_sequence")
    return temporal.predict_sequence(
        bound.apply, bound.params, initial, length=length, controls=controls, latent=latent,
        model_state=bound.model_state, rng=_call_rngs(bound, None, advance=False),
    )  # fmt: skip
