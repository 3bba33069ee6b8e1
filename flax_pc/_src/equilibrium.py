"""Inference to equilibrium: stop on a tolerance, or solve the gradient flow as an ODE.

:func:`flax_pc.infer` runs a fixed number ``T`` of optimiser steps. Here inference
runs until the nodes are at equilibrium, ``dF/dv = 0``, up to a tolerance:

- with an optax ``node_tx``, its steps run in a ``lax.while_loop`` that stops
  once ``rms(dF/dv) <= tolerance`` or after ``max_steps`` steps;
- with :class:`GradientFlow`, the gradient flow ``dv/dt = -dF/dv`` is solved by
  diffrax (an optional dependency: ``pip install flax_pc[ode]``) with an
  adaptive step size, until the same criterion holds (diffrax's steady-state
  event) or the time horizon ``t1`` or ``max_steps`` is reached.

A ReLU network's energy has kinks (its gradient jumps where a unit switches),
and at an equilibrium on a kink ``dF/dv`` does not vanish: inference then
stalls at ``rms(dF/dv)`` of about the size of the jumps, so a tolerance below
that runs to ``max_steps``. Smooth activations (tanh, gelu, silu) have no such
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

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flax_pc import energies as _energies
from flax_pc._src import inference, langevin
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["Equilibrium", "GradientFlow", "infer_to_equilibrium"]


def _import_diffrax() -> Any:
    try:
        return importlib.import_module("diffrax")
    except ImportError:
        raise ImportError(
            "fpc.GradientFlow solves inference as an ODE with diffrax, which is not installed: "
            "pip install 'flax_pc[ode]' (or pip install diffrax)."
        ) from None


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Inference as the ODE ``dv/dt = -dF/dv``, solved by diffrax.

    Pass it as ``node_tx`` to :func:`infer_to_equilibrium` or
    :class:`~flax_pc.PCTrainState` instead of an optax transform.

    Attributes:
      solver: a diffrax solver; ``None`` is ``diffrax.Tsit5()`` (5th order,
        adaptive). jpc's default ``diffrax.Heun()`` works too but needs many
        more steps for the same tolerance.
      stepsize_controller: a diffrax step-size controller; ``None`` is
        ``diffrax.PIDController(rtol=1e-6, atol=1e-6)``. With
        ``diffrax.ConstantStepSize()`` give ``dt0``.
      t1: the time horizon: the flow stops at ``t = t1`` at the latest.
      dt0: the first step size; ``None`` lets an adaptive controller choose.

    Near equilibrium an explicit solver with an adaptive step size runs at the
    edge of its stability, where ``rms(dF/dv)`` hovers at about the
    controller's ``atol`` times the largest curvature of ``F``: give a
    ``tolerance`` well above ``atol`` (e.g. 10x) or the flow runs to ``t1``.

    Example:
      >>> import flax_pc as fpc
      >>> flow = fpc.GradientFlow(t1=10.0)  # Tsit5 with a PID controller
    """

    solver: Any = None
    stepsize_controller: Any = None
    t1: float = 20.0
    dt0: float | None = None

    def __post_init__(self) -> None:
        diffrax = _import_diffrax()
        if isinstance(self.t1, bool) or not isinstance(self.t1, (int, float)) or self.t1 <= 0:
            raise ValueError(f"GradientFlow: t1 must be a number > 0, got {self.t1!r}.")
        if self.dt0 is not None and not (isinstance(self.dt0, (int, float)) and self.dt0 > 0):
            raise ValueError(f"GradientFlow: dt0 must be a number > 0 or None, got {self.dt0!r}.")
        if self.solver is not None and not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(
                "GradientFlow: solver must be a diffrax solver (e.g. diffrax.Heun()), got "
                f"{type(self.solver).__name__}."
            )
        if self.stepsize_controller is not None and not isinstance(
            self.stepsize_controller, diffrax.AbstractStepSizeController
        ):
            raise TypeError(
                "GradientFlow: stepsize_controller must be a diffrax step-size controller "
                f"(e.g. diffrax.PIDController(rtol=1e-3, atol=1e-3)), got "
                f"{type(self.stepsize_controller).__name__}."
            )
        if self.dt0 is None and isinstance(self.stepsize_controller, diffrax.ConstantStepSize):
            raise ValueError("GradientFlow: diffrax.ConstantStepSize() needs dt0 (the step size).")


class Equilibrium(NamedTuple):
    """What :func:`infer_to_equilibrium` returns.

    Attributes:
      nodes: the :data:`~flax_pc.NODES` collection at the end of inference.
      energy: the :class:`~flax_pc.Energy` there.
      initial_energy: scalar, the total energy before inference.
      steps: int scalar, the steps taken (optax steps, or the ODE solver's
        accepted steps); ``max_steps`` if the tolerance was not reached.
      converged: bool scalar, ``rms(dF/dv) <= tolerance`` at the end (``False``
        without a tolerance).
    """

    nodes: PyTree
    energy: inference.Energy
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


def check_tolerance(tolerance: Any) -> float:
    """``tolerance`` as a float if it is a number > 0; raises otherwise."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0:
        raise ValueError(
            f"tolerance must be a number > 0 (the rms of dF/dv at which inference stops), "
            f"got {tolerance!r}."
        )
    return float(tolerance)


def infer_to_equilibrium(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    node_tx: optax.GradientTransformation | GradientFlow,
    tolerance: float | None,
    max_steps: int,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
) -> Equilibrium:
    """Runs inference until ``rms(dF/dv) <= tolerance`` (see the module doc).

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy, model_state, rng:
        as in :func:`flax_pc.infer`.
      node_tx: an optax transform (its steps run in a ``lax.while_loop``) or a
        :class:`GradientFlow` (an ODE solve).
      tolerance: stop once ``rms(dF/dv)`` is at most this (> 0); ``None`` runs
        ``max_steps`` optax steps, or a :class:`GradientFlow` to its ``t1``.
      max_steps: the most steps (optax) or accepted solver steps (ODE), >= 1.

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
      ...     node_tx=optax.sgd(0.5), tolerance=1e-4, max_steps=200)
      >>> bool(result.converged), int(result.steps) < 200
      (True, True)
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}.")
    if tolerance is not None:
        tolerance = check_tolerance(tolerance)
    if not isinstance(node_tx, GradientFlow):
        inference.check_transform(node_tx, "node_tx")
    total = inference.energy_of_nodes(
        apply_fn, params, inputs, targets,
        output_energy=output_energy, model_state=model_state, rng=rng,
    )  # fmt: skip
    # rms(dF/dv) <= limit is convergence; without a tolerance nothing converges.
    limit = -1.0 if tolerance is None else tolerance
    if isinstance(node_tx, GradientFlow):
        return _solve_flow(total, nodes, node_tx, tolerance, limit, max_steps)
    noise = langevin.noise_key(inference.as_rngs(rng))
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
    diffrax = _import_diffrax()
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
