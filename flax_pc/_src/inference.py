"""Inference: how the nodes settle (:class:`Inference`) and the loop that settles them.

Two jobs: the :class:`Inference` value, which checks every option and every
combination of options where it is made, and :func:`infer`, which runs its
steps on the nodes as one ``lax.scan``. The energy the steps descend is
:func:`flax_pc.energy`'s (summed over the batch, so ``dF/dv`` is per example).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flax_pc import energies as _energies
from flax_pc._src import batches, langevin, user_warnings
from flax_pc._src.gradient_flow import GradientFlow
from flax_pc._src.model_calls import apply_model, check_model_state
from flax_pc._src.network_energy import (
    Energy,
    energy_of_nodes,
    only_node_energies,
    output_energy_of,
)
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, OutputEnergyFn, PyTree

__all__ = ["Inference", "infer"]

#: The most inference steps that ``unroll=None`` unrolls (see :class:`Inference`).
MAX_UNROLLED_STEPS = 32

NodeTransform = optax.GradientTransformation | GradientFlow


def check_transform(tx: Any, name: str) -> None:
    """Raises unless ``tx`` is an optax transform; ``name`` is the argument's."""
    if not (hasattr(tx, "init") and hasattr(tx, "update") and callable(tx.update)):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation (e.g. optax.sgd(0.01)), "
            f"got {type(tx).__name__}."
        )


def check_tolerance(tolerance: Any) -> float:
    """``tolerance`` as a float if it is a number > 0; raises otherwise."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0:
        raise ValueError(
            f"tolerance must be a number > 0 (the rms of dF/dv at which inference stops), "
            f"got {tolerance!r}."
        )
    return float(tolerance)


@dataclasses.dataclass(frozen=True)
class Inference:
    """How the value nodes settle: the node optimiser and the number of steps.

    One value for every function that runs inference
    (:meth:`PCTrainState.create <flax_pc.PCTrainState.create>`,
    :func:`~flax_pc.infer`, :func:`~flax_pc.infer_to_equilibrium` and their
    :mod:`flax_pc.nnx` twins), checked where it is made.

    Attributes:
      node_tx: the update of the nodes: an optax transform (e.g.
        ``optax.sgd(0.1)``), :func:`~flax_pc.langevin` (noisy steps, for
        sampling) or a :class:`~flax_pc.GradientFlow` (inference as an ODE,
        solved to equilibrium).
      steps: ``T``, a Python int: the number of node steps; with a
        ``tolerance`` or a :class:`~flax_pc.GradientFlow`, the most steps
        (>= 1). Each value of ``T`` compiles its own loop.
      tolerance: ``None`` (run ``steps`` steps), or inference to
        equilibrium: stop once ``rms(dF/dv) <= tolerance`` (a number > 0),
        after ``steps`` steps at most.
      unroll: ``lax.scan``'s ``unroll`` for a fixed number of steps:
        ``None`` lets flax_pc choose (every step unrolled for
        ``steps <= 32``, a rolled loop beyond, so that compile time stays
        bounded whatever ``T``; unrolled, XLA:CPU runs convolution gradients
        on its fast path), ``True`` (every step), ``False`` or an int >= 1
        (steps per loop iteration). Inference to equilibrium runs a
        ``lax.while_loop`` or an ODE solve, which cannot be unrolled.

    Example:
      >>> import optax
      >>> import flax_pc as fpc
      >>> fpc.Inference(optax.sgd(0.1), 8).to_equilibrium
      False
      >>> fpc.Inference(optax.sgd(0.1), 200, tolerance=1e-4).to_equilibrium
      True
    """

    node_tx: NodeTransform
    steps: int
    tolerance: float | None = dataclasses.field(default=None, kw_only=True)
    unroll: int | bool | None = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.node_tx, GradientFlow):
            check_transform(self.node_tx, "Inference: node_tx")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int):
            raise TypeError(
                f"Inference: steps must be a Python int >= 0, got {self.steps!r} "
                f"({type(self.steps).__name__})."
            )
        if self.steps < 0:
            raise ValueError(f"Inference: steps must be >= 0, got {self.steps}.")
        if self.tolerance is not None:
            object.__setattr__(self, "tolerance", check_tolerance(self.tolerance))
        if self.unroll is not None and not (
            isinstance(self.unroll, bool) or (isinstance(self.unroll, int) and self.unroll >= 1)
        ):
            raise ValueError(
                f"Inference: unroll must be None (flax_pc chooses), True (unroll every "
                f"inference step), False or an int >= 1 (steps per loop iteration), got "
                f"{self.unroll!r}."
            )
        if self.to_equilibrium and self.unroll is not None:
            raise ValueError(
                "Inference: unroll applies to a fixed number of inference steps; inference to "
                "equilibrium (a tolerance, or a GradientFlow) runs a loop that cannot be "
                "unrolled. Leave unroll out (None)."
            )
        if self.to_equilibrium and self.steps == 0:
            raise ValueError(
                "Inference: with a tolerance or a GradientFlow, steps is the most steps "
                "inference may take: use steps >= 1."
            )

    @property
    def to_equilibrium(self) -> bool:
        """Whether inference runs to equilibrium (a tolerance, or a GradientFlow)."""
        return self.tolerance is not None or isinstance(self.node_tx, GradientFlow)

    @property
    def scan_unroll(self) -> int | bool:
        """``lax.scan``'s ``unroll`` for the fixed-step loop (``unroll=None`` resolved)."""
        if self.unroll is None:
            return True if self.steps <= MAX_UNROLLED_STEPS else 1
        return self.unroll


#: The deprecated keywords and the field of :class:`Inference` each becomes.
_OLD_KEYWORDS = {
    "node_tx": "node_tx",
    "inference_steps": "steps",
    "max_steps": "steps",
    "tolerance": "tolerance",
    "unroll": "unroll",
}


#: The deprecated keywords of the fixed-step and the equilibrium functions.
FIXED_STEP_KEYWORDS = ("node_tx", "inference_steps", "unroll")
EQUILIBRIUM_KEYWORDS = ("node_tx", "tolerance", "max_steps")


def from_keywords(
    function: str,
    inference: Inference | None,
    old: Mapping[str, Any],
    *,
    keywords: tuple[str, ...],
    required: bool,
) -> Inference | None:
    """``inference``, or the :class:`Inference` the deprecated keywords ``old`` describe.

    ``old`` holds the keywords a caller passed besides the known ones; an
    unknown keyword is a ``TypeError`` as Python's own; ``None`` counts as not
    given. The old keywords warn once (``DeprecationWarning``) with the new
    call; with ``inference`` too they are an error.

    Args:
      function: the public name of the caller, for messages
        (``'fpc.infer'``).
      keywords: the deprecated keywords the caller took.
      inference: what the caller got as ``inference=``.
      old: the caller's other keyword arguments.
      required: whether the caller needs an :class:`Inference` (``None`` is
        then a ``TypeError`` naming ``inference=``).
    """
    unknown = sorted(set(old) - set(keywords))
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    given = {name: value for name, value in old.items() if value is not None}
    if given and inference is not None:
        raise TypeError(
            f"{function}: give inference= alone; {', '.join(given)} "
            f"{'is' if len(given) == 1 else 'are'} part of the Inference value."
        )
    if given:
        fields = {_OLD_KEYWORDS[name]: value for name, value in given.items()}
        missing = [name for name in ("node_tx", "steps") if name not in fields]
        old_steps = "max_steps" if "max_steps" in old else "inference_steps"
        if missing:
            names = ["node_tx" if m == "node_tx" else old_steps for m in missing]
            raise TypeError(f"{function}: {', '.join(given)} without {' and '.join(names)}.")
        options = "".join(
            f", {name}={fields[name]!r}" for name in ("tolerance", "unroll") if name in fields
        )
        user_warnings.warn(
            f"{function}({', '.join(f'{name}=...' for name in given)}) is deprecated and goes "
            f"in flax_pc 0.4: pass inference=fpc.Inference(node_tx, {fields['steps']!r}"
            f"{options}).",
            DeprecationWarning,
        )
        inference = Inference(
            fields["node_tx"],
            fields["steps"],
            tolerance=fields.get("tolerance"),
            unroll=fields.get("unroll"),
        )
    if inference is None:
        if required:
            raise TypeError(
                f"{function} runs inference on the nodes: give inference=fpc.Inference("
                "node_tx, steps), e.g. fpc.Inference(optax.sgd(0.1), 8)."
            )
        return None
    if not isinstance(inference, Inference):
        raise TypeError(
            f"{function}: inference must be an fpc.Inference(node_tx, steps), got "
            f"{type(inference).__name__}."
        )
    return inference


def infer(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    inference: Inference | None = None,
    output_energy: OutputEnergyFn = _energies.squared_error,
    model_state: Mapping[str, PyTree] | None = None,
    rng: RNG | None = None,
    **deprecated: Any,
) -> tuple[PyTree, Energy]:
    """Runs ``inference.steps`` steps of ``inference.node_tx`` on the nodes.

    Each step takes ``g = dF/dnodes`` (``F`` summed over the batch, so ``g`` is
    per example) at the current nodes and applies ``node_tx``'s update. The
    optimiser state starts from ``node_tx.init(nodes)``. The steps run as one
    ``lax.scan`` under your ``jax.jit``: the number of steps is static, so
    each ``T`` compiles once, unrolled as ``inference.unroll`` says.

    Args:
      apply_fn, params, nodes, inputs, targets, output_energy, model_state: as
        in :func:`~flax_pc.energy`.
      inference: an :class:`Inference` with a fixed number of steps (for a
        tolerance or a :class:`~flax_pc.GradientFlow`, use
        :func:`~flax_pc.infer_to_equilibrium`).
      rng: a key (or int seed) or ``{stream: key}``; the same keys at every
        step, so a dropout layer keeps one mask and inference descends one
        energy. A ``node_tx`` that draws noise (:func:`~flax_pc.langevin`)
        gets a new key at every step, made from the :data:`~flax_pc.NOISE` key.
      **deprecated: ``node_tx=``, ``inference_steps=``, ``unroll=`` (flax_pc
        0.2), which warn and go in 0.4.

    Returns:
      ``(nodes, energies)``: the nodes after ``T`` steps, and the
      :class:`~flax_pc.Energy` *before* each step, stacked (leading axis ``T``).

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
      ...                             inference=fpc.Inference(optax.sgd(0.1), 5))
      >>> energies.total.shape  # the total energy before each of the 5 steps
      (5,)
      >>> bool(energies.total[-1] < energies.total[0])
      True
    """
    inference = from_keywords(
        "fpc.infer", inference, deprecated, keywords=FIXED_STEP_KEYWORDS, required=True
    )
    assert inference is not None
    if inference.to_equilibrium:
        raise ValueError(
            "fpc.infer runs a fixed number of steps; this Inference runs to equilibrium (a "
            "tolerance or a GradientFlow): call fpc.infer_to_equilibrium with it."
        )
    return run_inference(
        apply_fn, params, nodes, inputs, targets, inference=inference,
        output_energy=output_energy, model_state=model_state, rng=rng,
        forward_initialized=False,
    )  # fmt: skip


def run_inference(
    apply_fn: ApplyFn,
    params: PyTree,
    nodes: PyTree,
    inputs: PyTree,
    targets: PyTree,
    *,
    inference: Inference,
    output_energy: OutputEnergyFn,
    model_state: Mapping[str, PyTree] | None,
    rng: RNG | None,
    forward_initialized: bool,
) -> tuple[PyTree, Energy]:
    """:func:`infer`, with the first-step shortcut of a forward initialisation.

    ``forward_initialized`` is ``InitialNodes.forward`` of the ``initialize``
    call that made ``nodes``, never a caller's claim: every hidden error is
    then zero, so ``dF/dv`` at the first step is that of the output energy
    alone, which reaches only the last hidden node, and the first step costs
    one backward pass through the output layer instead of a forward and a
    backward pass through the whole network. The shortcut is taken only where
    it is exact: where, besides, every sown energy is a node's
    (``only_node_energies``; not with an :class:`~flax_pc.EnergyTerm`).

    Every node update gets the step's noise key (``key=``, see
    :func:`~flax_pc.langevin`) where ``rng`` holds a :data:`~flax_pc.NOISE` key.
    """
    node_tx = inference.node_tx
    assert not isinstance(node_tx, GradientFlow)
    steps, unroll = inference.steps, inference.scan_unroll
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
    if steps == 0:
        # Shapes of the (empty) energy trajectory without running a step.
        shapes = jax.eval_shape(lambda n: total(n)[1], nodes)
        empty = jax.tree_util.tree_map(lambda s: jnp.zeros((0, *s.shape), s.dtype), shapes)
        return nodes, empty
    if not (forward_initialized and only_node_energies(total, nodes)):
        (nodes, _), energies = jax.lax.scan(
            step, (nodes, opt_state), jnp.arange(steps), unroll=unroll
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
    (nodes, _), rest = jax.lax.scan(step, (nodes, opt_state), jnp.arange(1, steps), unroll=unroll)
    first = Energy(
        total=jnp.sum(per_example),
        per_example=per_example,
        nodes=jax.tree_util.tree_map(lambda e: jnp.zeros(e.shape[1:], e.dtype), rest.nodes),
        output=per_example,
        output_prediction=output,
    )
    energies = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return nodes, energies
