"""The metrics of ``PCTrainState.train_step``: energies per example, and whether one rose.

Every metric is normalised by the true batch size (the leading axis of the
inputs; under a named device axis, the whole batch's, summed over devices).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from flax_pc._src import named_axes, network_energy
from flax_pc._src.types import Array

#: ``metrics['energy_rose']`` counts a rise only above this fraction of the
#: energy before inference (or 8 machine epsilons of its dtype, if more).
ROSE_TOLERANCE = 1e-4


def energy_rose(energy: Array) -> Array:
    """Whether an inference step raised the energy: a bool scalar.

    ``True`` when some step ``t`` has ``energy[t + 1] - energy[t] > tol *
    |energy[0]|``, with ``tol`` = :data:`ROSE_TOLERANCE` (1e-4), or 8 machine
    epsilons of the energy's dtype if that is more (bfloat16: 0.06). Rounding
    moves a float32 energy by far less than that; a node step too large for
    the energy's curvature moves it by much more.

    Args:
      energy: the batch-mean energy before each step and after the last,
        ``[T + 1]`` (``metrics['energy']``).
    """
    if energy.shape[0] < 2:
        return jnp.zeros((), bool)
    dtype = energy.dtype if jnp.issubdtype(energy.dtype, jnp.floating) else jnp.float32
    tolerance = max(ROSE_TOLERANCE, 8 * float(jnp.finfo(dtype).eps)) * jnp.abs(energy[0])
    return jnp.any(jnp.diff(energy) > tolerance)


def step_metrics(
    before: Array,
    final: network_energy.Energy,
    loss: Array,
    batch_size: int,
    steps: Any,
    axis_name: str | None,
) -> dict[str, Any]:
    """The metrics of one PC (or iPC) step.

    Args:
      before: the total energy before each inference step, ``[T]``.
      final: the :class:`~flax_pc.Energy` after inference (at the weight step).
      loss: the feed-forward output energy summed over the batch (a scalar).
      batch_size: ``B``, this device's examples.
      steps: the node steps taken.
      axis_name: the named device axis whose devices share the batch, or ``None``.
    """
    node_sums = {name: jnp.sum(e) for name, e in network_energy.node_energies(final.nodes).items()}
    totals = jnp.concatenate([before, final.total[None]])
    totals, node_sums, loss, count = named_axes.total(
        (totals, node_sums, loss, batch_size), axis_name
    )
    energy = totals / count
    return {
        "energy": energy,
        "energy_rose": energy_rose(energy),
        "node_energies": {name: value / count for name, value in node_sums.items()},
        "loss": loss / count,
        "inference_steps": jnp.asarray(steps, jnp.int32),
    }


def backprop_metrics(
    loss: Array, batch_size: int, energy_length: int, axis_name: str | None
) -> dict[str, Any]:
    """The metrics of a backprop step (``loss``: the batch-summed output energy)."""
    loss, count = named_axes.total((loss, batch_size), axis_name)
    mean_loss = loss / count
    return {
        "energy": jnp.full((energy_length,), mean_loss),
        "energy_rose": jnp.zeros((), bool),
        "node_energies": {},
        "loss": mean_loss,
        "inference_steps": jnp.zeros((), jnp.int32),
    }
