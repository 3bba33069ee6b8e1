"""Inference to equilibrium: stop on a tolerance, or solve the gradient flow as an ODE.

:func:`flax_pc.infer` runs a fixed number ``T`` of optimiser steps. Here inference
runs until the nodes are at equilibrium, ``dF/dv = 0``, up to a tolerance:

- with an optax ``node_tx``, its steps run in a ``lax.while_loop`` that stops
  once ``rms(dF/dv) <= tolerance`` or after ``steps`` steps;
- with :class:`GradientFlow`, the gradient flow ``dv/dt = -dF/dv`` is solved by
  diffrax (an optional dependency: ``pip install flax_pc[ode]``) with an
  adaptive step size, until the same criterion holds (diffrax's steady-state
  event) or the time horizon ``t1`` or ``steps`` accepted steps are reached.

A ReLU network's energy has kinks (its gradient jumps where a unit switches),
and at an equilibrium on a kink ``dF/dv`` does not vanish: inference then
stalls at ``rms(dF/dv)`` of about the size of the jumps, so a tolerance below
that runs all ``steps``. Smooth activations (tanh, gelu, silu) have no such
floor.

A ``lax.while_loop`` cannot be unrolled like :func:`flax_pc.infer`'s steps: on
CPU a conv net's inference step is several times slower inside a loop
(jax-ml/jax#12868), so there a fixed ``T`` may cost less than inference to a
tolerance.

``rms`` is the root mean square over every entry of every node of the batch;
``F`` is summed over the batch, so ``dF/dv`` is per example and the criterion
does not depend on the batch size. SGD with learning rate ``eta`` is the Euler
method for the gradient flow with step ``eta``, so ``T`` SGD steps reach time
``T * eta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flax_pc import energies as _energies
from flax_pc._src import gradient_flow, langevin, network_energy
from flax_pc._src.gradient_flow import GradientFlow
from flax_pc._src.inference import EQUILIBRIUM_KEYWORDS, Inference, from_keywords
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["Equilibrium", "infer_to_equilibrium"]


class Equilibrium(NamedTuple):
    """What :func:`infer_to_equilibrium` returns.

    Attributes:
      nodes: the :data:`~flax_pc.NODES` collection at the end of inference.
      energy: the :class:`~flax_pc.Energy` there.
      initial_energy: scalar, the total energy before inference.
      steps: int scalar, the steps taken (optax steps, or the ODE solver's
        accepted steps); ``inference.steps`` if the tolerance was not reached.
      converged: bool scalar, ``rms(dF/dv) <= tolerance`` at the end (``False``
        without a tolerance).
    """

    nodes: PyTree
    energy: network_energy.Energy
    initial_energy: Array
    steps: Array
    converged: Array


def rms(tree: PyTree) -> Array:
    """The root mean square over every entry of the arrays of ``tree`` (0 for none)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    total = sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)
    count = sum(leaf.size for leaf in leaves)
    return jnp.sqrt(total / count)


def infer_to_equilibrium(
    apply_fn: ApplyFn, params: PyTree, nodes: PyTree, inputs: PyTree, targets: PyTree, *,
    inference: Inference | None = None,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None, rng: RNG | None = None,
    **deprecated: Any,
) -> Equilibrium:  # fmt: skip
    """Runs inference until ``rms(dF/dv) <= inference.tolerance`` (see the module doc).

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy, model_state, rng:
        as in :func:`flax_pc.infer`.
      inference: an :class:`~flax_pc.Inference`: its ``node_tx`` an optax
        transform (its steps run in a ``lax.while_loop``) or a
        :class:`~flax_pc.GradientFlow` (an ODE solve); ``steps`` the most
        steps (optax) or accepted solver steps (ODE), >= 1; inference stops
        once ``rms(dF/dv)`` is at most its ``tolerance`` (``None`` runs
        every step, or a :class:`~flax_pc.GradientFlow` to its ``t1``).
      **deprecated: ``node_tx=``, ``tolerance=``, ``max_steps=`` (flax_pc
        0.2), which warn and go in 0.4.

    Returns:
      An :class:`Equilibrium`.

    Example:
      Error nodes (ePC) and a smooth activation, stopped at ``rms(dF/dv) <= 1e-4``:

      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
      >>> net = nn.Sequential([nn.Dense(16), nn.gelu, fpc.PCNode(latent="error"), nn.Dense(3)])
      >>> x, y = jnp.ones((2, 5)), jnp.ones((2, 3))
      >>> params = net.init(jax.random.key(1), x)["params"]
      >>> result = fpc.infer_to_equilibrium(
      ...     net.apply, params, fpc.init_nodes(net.apply, params, x), x, y,
      ...     inference=fpc.Inference(optax.sgd(0.5), 200, tolerance=1e-4))
      >>> bool(result.converged), int(result.steps) < 200
      (True, True)
    """
    inference = from_keywords(
        "fpc.infer_to_equilibrium", inference, deprecated,
        keywords=EQUILIBRIUM_KEYWORDS, required=True,
    )  # fmt: skip
    assert inference is not None
    if inference.unroll is not None:
        raise ValueError(
            "fpc.infer_to_equilibrium runs a lax.while_loop (or an ODE solve), which cannot be "
            "unrolled: give an Inference without unroll."
        )
    if inference.steps < 1:
        raise ValueError(
            "fpc.infer_to_equilibrium: inference.steps is the most steps inference may take: "
            "use steps >= 1."
        )
    node_tx, tolerance, max_steps = inference.node_tx, inference.tolerance, inference.steps
    total = network_energy.energy_of_nodes(
        apply_fn, params, inputs, targets,
        output_energy=output_energy, model_state=model_state, rng=rng,
    )  # fmt: skip
    # rms(dF/dv) <= limit is convergence; without a tolerance nothing converges.
    limit = -1.0 if tolerance is None else tolerance
    if isinstance(node_tx, GradientFlow):
        return _solve_flow(total, nodes, node_tx, tolerance, limit, max_steps)
    noise = langevin.noise_key(as_rngs(rng))
    return _while_loop(total, nodes, node_tx, limit, max_steps, noise)


def _while_loop(total, nodes, node_tx, limit, max_steps, noise) -> Equilibrium:
    gradient = jax.grad(total, has_aux=True)
    grads, start = gradient(nodes)

    def not_done(carry):
        _, _, grads, _, step = carry
        return (step < max_steps) & (rms(grads) > limit)

    def step(carry):
        nodes, opt_state, grads, _, step = carry
        key = langevin.step_key(noise, step)
        updates, opt_state = langevin.update_nodes(node_tx, grads, opt_state, nodes, key)
        nodes = optax.apply_updates(nodes, updates)
        grads, result = gradient(nodes)
        return nodes, opt_state, grads, result, step + 1

    carry = (nodes, node_tx.init(nodes), grads, start, jnp.zeros((), jnp.int32))
    nodes, _, grads, final, steps = jax.lax.while_loop(not_done, step, carry)
    return Equilibrium(nodes, final, start.total, steps, rms(grads) <= limit)


def _solve_flow(total, nodes, flow: GradientFlow, tolerance, limit, max_steps) -> Equilibrium:
    diffrax = gradient_flow.import_diffrax()
    gradient = jax.grad(total, has_aux=True)

    def vector_field(t, nodes, args):
        grads, _ = gradient(nodes)
        return jax.tree_util.tree_map(jnp.negative, grads)

    event = None
    if tolerance is not None:
        event = diffrax.Event(diffrax.steady_state_event(rtol=0.0, atol=tolerance, norm=rms))
    controller = flow.stepsize_controller or diffrax.PIDController(rtol=1e-6, atol=1e-6)
    start_total, _ = total(nodes)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        flow.solver or diffrax.Tsit5(),
        t0=0.0,
        t1=flow.t1,
        dt0=flow.dt0,
        y0=nodes,
        stepsize_controller=controller,
        event=event,
        max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True),
        throw=False,  # reaching max_steps is reported by `converged`, not raised
    )
    nodes = jax.tree_util.tree_map(lambda y: y[0], solution.ys)
    grads, final = gradient(nodes)
    steps = jnp.asarray(solution.stats["num_accepted_steps"], jnp.int32)
    return Equilibrium(nodes, final, start_total, steps, rms(grads) <= limit)
