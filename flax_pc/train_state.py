"""``PCTrainState``: a Flax ``TrainState`` that trains by predictive coding."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from flax_pc import energies as _energies
from flax_pc import inference as _inference

Array = jax.Array
EnergyFn = Callable[[Array, Array], Array]

ALGORITHMS = ("pc", "ipc", "bp")


class PCTrainState(train_state.TrainState):
    """``TrainState`` plus what PC needs: a node optimiser and the inference steps.

    ``train_step(inputs, targets)`` does, for ``algorithm='pc'``:

    1. ``nodes = init_nodes(...)``: forward initialisation from ``inputs``;
    2. ``inference_steps`` steps of ``node_tx`` on ``dF/dnodes`` (node
       optimiser state re-initialised per batch), as one ``lax.scan``;
    3. one ``tx`` step on ``dF/dparams`` at the final nodes.

    The energy is the total over the batch (see :mod:`flax_pc.inference`)::

        F = sum_b [ sum_l pi_l E_l(v_l^b, mu_l^b) + output_energy(y^b, out^b) ]

    so node gradients are per example and the weight gradient is that of the
    batch-summed energy, as in the pcax tutorial. For pcx-0.6's batch *mean*,
    chain a scale into ``tx``:
    ``optax.chain(optax.scale(1 / batch_size), optax.adam(1e-3))``.

    Attributes:
      node_tx: optax transform applied to the value nodes.
      inference_steps: ``T``, node steps per batch.
      output_energy: ``energy(targets, output) -> [B]`` clamping the output.
      algorithm: ``'pc'`` (above), ``'ipc'`` (incremental PC: at each of the
        ``T`` steps, both gradients at the same point and both applied) or
        ``'bp'`` (backprop of the batch-summed ``output_energy`` on the
        params-only forward pass; nodes ignored).
      nudging: ``beta`` or ``None``. With ``beta``, the output is not clamped
        to the target ``y`` but to ``t = out - beta * (out - y)`` (``out``: the
        feed-forward output, held fixed during inference), and the weight
        gradient is scaled by ``1 / beta``, as in pcx. ``beta = 1`` is
        clamping; ``0 < beta < 1`` is positive, ``beta < 0`` negative nudging.
        Unlike a weak output precision (``output_energy = beta *
        squared_error``), it does not converge to the backprop gradient as
        ``beta -> 0``: the output error stays at unit precision, so the hidden
        nodes absorb part of it.
    """

    node_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    inference_steps: int = struct.field(pytree_node=False)
    output_energy: EnergyFn = struct.field(pytree_node=False)
    algorithm: str = struct.field(pytree_node=False)
    nudging: float | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Callable[..., Any],
        params: Any,
        tx: optax.GradientTransformation,
        node_tx: optax.GradientTransformation,
        inference_steps: int,
        output_energy: EnergyFn = _energies.squared_error,
        algorithm: str = "pc",
        nudging: float | None = None,
        **kwargs: Any,
    ) -> PCTrainState:
        """Creates a state with ``step=0`` and ``tx.init(params)``.

        Args:
          apply_fn: the model's ``apply``.
          params: the model's params (``variables['params']``).
          tx: optax transform for the params, e.g. ``optax.adam(1e-3)``.
          node_tx: optax transform for the nodes, e.g. ``optax.sgd(0.01)``.
          inference_steps: ``T >= 0``.
          output_energy: energy of the output layer against the targets.
          algorithm: ``'pc'``, ``'ipc'`` or ``'bp'``.
          nudging: ``beta`` for output nudging (see the class doc), or ``None``.
        """
        _inference._check_transform(tx, "tx")
        _inference._check_transform(node_tx, "node_tx")
        _inference._check_steps(inference_steps)
        if not callable(output_energy):
            raise TypeError(
                "output_energy must be callable as energy(targets, output) -> [B], got "
                f"{type(output_energy).__name__}."
            )
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
        if algorithm == "ipc" and inference_steps == 0:
            raise ValueError(
                "algorithm='ipc' takes one weight step per inference step; with "
                "inference_steps=0 it would never learn. Use inference_steps >= 1."
            )
        if nudging is not None:
            if isinstance(nudging, bool) or not isinstance(nudging, (int, float)):
                raise TypeError(f"nudging must be a float beta or None, got {nudging!r}.")
            if nudging == 0:
                raise ValueError("nudging=0 gives no learning signal; use beta != 0 or None.")
            if algorithm == "bp":
                raise ValueError("nudging applies to algorithm 'pc' or 'ipc', not 'bp'.")
        state = super().create(
            apply_fn=apply_fn,
            params=params,
            tx=tx,
            node_tx=node_tx,
            inference_steps=inference_steps,
            output_energy=output_energy,
            algorithm=algorithm,
            nudging=None if nudging is None else float(nudging),
            **kwargs,
        )
        # A strongly typed step: the state that comes out of a jitted step has
        # the same types as the one that goes in, so the step compiles once.
        return state.replace(step=jnp.zeros((), jnp.int32))

    def train_step(
        self, inputs: Array, targets: Array, rng: Array | None = None
    ) -> tuple[PCTrainState, dict[str, Any]]:
        """One batch of training; call it under ``jax.jit``.

        Args:
          inputs: ``[B, ...]``.
          targets: ``[B, *out_features]``, the shape of the model output.
          rng: PRNG key for nodes initialised with ``init='normal'``.

        Returns:
          ``(new_state, metrics)`` with ``metrics['energy']``: batch-mean total
          energy at every inference step, ``[T + 1]`` (before the first step
          ... after the last); ``metrics['node_energies']``: ``{path: scalar}``
          batch-mean energy of each node after inference;
          ``metrics['loss']``: batch-mean output energy of the feed-forward
          prediction.
        """
        return _train_step(self, inputs, targets, rng)


def _warn_no_nodes() -> None:
    warnings.warn(
        "PCTrainState: the model has no flax_pc.PCNode, so train_step is plain backprop "
        "of output_energy (add fpc.PCNode() after hidden layers for predictive coding).",
        stacklevel=5,
    )


def _scale(tree, factor: float):
    if factor == 1.0:
        return tree
    return jax.tree_util.tree_map(lambda g: g * factor, tree)


def _metrics(steps: _inference.Energy, final: _inference.Energy, loss: Array, batch_size: int):
    energy = jnp.concatenate([steps.total, final.total[None]]) / batch_size
    node_energies = _inference.node_energies(final.nodes)
    return {
        "energy": energy,
        "node_energies": {name: jnp.mean(value) for name, value in node_energies.items()},
        "loss": loss,
    }


def _train_step(state: PCTrainState, inputs, targets, rng):
    inputs = jnp.asarray(inputs)
    targets = jnp.asarray(targets)
    batch_size = inputs.shape[0]
    if state.algorithm == "bp":
        return _bp_step(state, inputs, targets)

    nodes, forward_initialised = _inference._init_nodes(state.apply_fn, state.params, inputs, rng)
    # The feed-forward prediction; with init='forward' XLA merges this pass
    # with the initialisation's (common subexpressions), so it costs nothing.
    output = state.apply_fn({"params": state.params}, inputs)
    _inference._check_targets(targets, output)
    loss = jnp.mean(state.output_energy(targets, output))
    if not nodes:
        _warn_no_nodes()

    clamp, grad_scale = targets, 1.0
    if state.nudging is not None:
        clamp = jax.lax.stop_gradient(output - state.nudging * (output - targets))
        grad_scale = 1.0 / state.nudging
    total = _inference._total_energy(state.apply_fn, inputs, clamp, state.output_energy)

    if state.algorithm == "ipc":
        return _ipc_step(state, nodes, total, grad_scale, loss, batch_size)

    # Without nodes there is nothing to infer: skip the steps, keep the shapes.
    steps = state.inference_steps if nodes else 0
    nodes, _, trajectory = _inference._infer(
        state.apply_fn, state.params, nodes, inputs, clamp, state.node_tx, steps,
        state.output_energy, forward_initialised,
    )  # fmt: skip
    grads, final = jax.grad(total, has_aux=True)(state.params, nodes)
    metrics = _metrics(trajectory, final, loss, batch_size)
    if steps != state.inference_steps:
        metrics["energy"] = jnp.full((state.inference_steps + 1,), metrics["energy"][-1])
    return state.apply_gradients(grads=_scale(grads, grad_scale)), metrics


def _bp_step(state: PCTrainState, inputs: Array, targets: Array):
    """Backprop on the same model: params-only forward pass, batch-summed loss."""

    def loss_fn(params):
        output = state.apply_fn({"params": params}, inputs)
        _inference._check_targets(targets, output)
        return jnp.sum(state.output_energy(targets, output))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    mean_loss = loss / inputs.shape[0]
    metrics = {
        "energy": jnp.full((state.inference_steps + 1,), mean_loss),
        "node_energies": {},
        "loss": mean_loss,
    }
    return state.apply_gradients(grads=grads), metrics


def _ipc_step(state, nodes, total, grad_scale, loss, batch_size):
    """Incremental PC: ``T`` joint steps, both gradients taken at the same point."""

    def step(carry, _):
        state, nodes, node_opt_state = carry
        grads, result = jax.grad(total, argnums=(0, 1), has_aux=True)(state.params, nodes)
        param_grads, node_grads = grads
        updates, node_opt_state = state.node_tx.update(node_grads, node_opt_state, nodes)
        nodes = optax.apply_updates(nodes, updates)
        state = state.apply_gradients(grads=_scale(param_grads, grad_scale))
        return (state, nodes, node_opt_state), result

    init = (state, nodes, state.node_tx.init(nodes))
    (state, nodes, _), trajectory = jax.lax.scan(step, init, None, length=state.inference_steps)
    _, final = total(state.params, nodes)
    return state, _metrics(trajectory, final, loss, batch_size)
