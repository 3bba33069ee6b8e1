"""``PCTrainState``: a Flax ``TrainState`` that trains by predictive coding."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from flax_pc import energies as _energies
from flax_pc._src import (
    batches,
    dead_nodes,
    equilibrium,
    initialization,
    langevin,
    named_axes,
    network_energy,
    step_metrics,
    user_warnings,
)
from flax_pc._src.gradient_flow import GradientFlow
from flax_pc._src.inference import Inference, check_transform, from_keywords, run_inference
from flax_pc._src.model_calls import apply_model, check_model_state
from flax_pc._src.rngs import as_rngs
from flax_pc._src.types import RNG, ApplyFn, Array, OutputEnergyFn, PyTree

__all__ = ["PCTrainState"]

Algorithm = Literal["pc", "ipc", "bp"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)

#: ``create``'s keywords of flax_pc 0.2, now the fields of :class:`~flax_pc.Inference`.
DEPRECATED_KEYWORDS = ("node_tx", "inference_steps", "tolerance", "unroll")


class PCTrainState(train_state.TrainState):
    """``TrainState`` plus what PC needs: how the nodes settle, and the output energy.

    ``train_step(inputs, targets, rng)`` does, for ``algorithm='pc'``:

    1. ``nodes = init_nodes(...)``: forward initialisation from ``inputs``;
    2. ``inference.steps`` steps of ``inference.node_tx`` on ``dF/dnodes``
       (node optimiser state re-initialised per batch), as one ``lax.scan``;
    3. one ``tx`` step on ``dF/dparams`` at the final nodes.

    The energy is the total over the batch::

        F = sum_b [ sum_l pi_l E_l(v_l^b, mu_l^b) + output_energy(y^b, out^b) ]

    so node gradients are per example and the weight gradient is that of the
    batch-summed energy, as in the pcax tutorial. For pcx-0.6's batch *mean*,
    chain a scale into ``tx``:
    ``optax.chain(optax.scale(1 / batch_size), optax.adam(1e-3))``.

    **Model state** (BatchNorm). ``model_state`` holds the model's non-param
    collections (``{'batch_stats': ...}``). ``apply_fn`` is the training-mode
    apply (``functools.partial(model.apply, train=True)``): BatchNorm then
    normalises with the statistics of the current batch through inference
    and the weight step, and the updates it makes to its running averages in
    those passes are discarded. The running averages move once per
    ``train_step``, from the params-only feed-forward pass on the batch (the
    pass that gives ``metrics['loss']``), so they track the network that is
    evaluated, not ``T`` intermediate states of the nodes. Evaluate with
    ``model.apply({'params': state.params, **state.model_state}, x, train=False)``.

    **Randomness** (Dropout). ``train_step``'s ``rng`` is used for every pass
    of the batch: one dropout mask through all ``T`` inference steps and the
    weight step, so inference descends one energy function (a new mask per
    step would make the energy it descends change under it).

    Attributes:
      inference: how the nodes settle, an :class:`~flax_pc.Inference`
        (kept as given for ``'bp'``, which does not use it).
      output_energy: ``energy(targets, output) -> [B]`` clamping the output.
      algorithm: ``'pc'`` (above), ``'ipc'`` (incremental PC: at each of the
        ``T`` steps, both gradients at the same point and both applied) or
        ``'bp'`` (backprop of the batch-summed ``output_energy`` on the
        params-only forward pass; nodes and ``inference`` unused).
      nudging: ``beta`` or ``None``. With ``beta``, the output is not clamped
        to the target ``y`` but to ``t = out - beta * (out - y)`` (``out``: the
        feed-forward output, held fixed during inference), and the weight
        gradient is scaled by ``1 / beta``, as in pcx. ``beta = 1`` is
        clamping; ``0 < beta < 1`` is positive, ``beta < 0`` negative nudging.
        With :func:`~flax_pc.energies.cross_entropy` or
        :func:`~flax_pc.energies.bernoulli`, whose output is logits, the
        output's probabilities ``p`` (softmax, sigmoid) are nudged instead:
        ``t = p - beta * (p - y)``, a distribution for ``0 < beta <= 1`` only.
        Unlike a weak output precision (``output_energy = beta *
        squared_error``), it does not converge to the backprop gradient as
        ``beta -> 0``: the output error stays at unit precision, so the hidden
        nodes absorb part of it.
      model_state: the model's non-param collections (see above); ``{}`` for
        a model without any.
      axis_name: ``None``, or the name of the device axis of ``jax.pmap`` /
        ``jax.shard_map`` over which the batch is split: every device then takes
        the weight step of the whole batch's energy (the sum over devices of
        each device's gradient, the step one device takes on the whole batch)
        and the metrics are the whole batch's. A model's
        ``BatchNorm(axis_name=...)`` of the same axis trains this way.
        (:class:`~flax_pc.DataParallel` needs none: ``jax.jit`` sums over
        the devices by itself.)
    """

    output_energy: OutputEnergyFn = struct.field(pytree_node=False)
    algorithm: Algorithm = struct.field(pytree_node=False)
    inference: Inference | None = struct.field(pytree_node=False, default=None)
    nudging: float | None = struct.field(pytree_node=False, default=None)
    model_state: PyTree = struct.field(default_factory=dict)
    axis_name: str | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(
        cls,
        *,
        apply_fn: ApplyFn,
        params: PyTree,
        tx: optax.GradientTransformation,
        inference: Inference | None = None,
        output_energy: OutputEnergyFn = _energies.squared_error,
        algorithm: Algorithm = "pc",
        nudging: float | None = None,
        model_state: Mapping[str, PyTree] | None = None,
        axis_name: str | None = None,
        **kwargs: Any,
    ) -> PCTrainState:
        """Creates a state with ``step=0`` and ``tx.init(params)``.

        Args:
          apply_fn: the model's training-mode ``apply`` (e.g.
            ``functools.partial(model.apply, train=True)`` for a model with
            BatchNorm or Dropout).
          params: the model's params (``variables['params']``).
          tx: optax transform for the params, e.g. ``optax.adam(1e-3)``.
          inference: how the nodes settle, e.g.
            ``fpc.Inference(optax.sgd(0.1), 8)``; required for ``'pc'`` and
            ``'ipc'``. ``'bp'`` takes it too and does not use it, so that
            comparing PC with backprop changes ``algorithm`` alone.
          output_energy: energy of the output layer against the targets.
          algorithm: ``'pc'``, ``'ipc'`` or ``'bp'``.
          nudging: ``beta`` for output nudging (see the class doc), or ``None``.
          model_state: the model's other collections, e.g.
            ``{'batch_stats': variables['batch_stats']}`` (see the class doc).
          axis_name: ``None``, or the device axis of ``jax.pmap`` /
            ``jax.shard_map`` that splits the batch (see the class doc).
          **kwargs: further fields of a subclass; and the keywords of flax_pc
            0.2 (``node_tx``, ``inference_steps``, ``tolerance``, ``unroll``),
            which warn and go in 0.4.
        """
        old = {name: kwargs.pop(name) for name in DEPRECATED_KEYWORDS if name in kwargs}
        inference = from_keywords(
            "PCTrainState.create", inference, old, keywords=DEPRECATED_KEYWORDS, required=False
        )
        check_transform(tx, "tx")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
        if algorithm == "bp":
            if nudging is not None:
                raise ValueError(
                    "algorithm='bp' is backprop on the feed-forward pass: it has no inference, "
                    "so it takes no nudging. Leave it out (None)."
                )
        elif inference is None:
            raise ValueError(
                f"algorithm={algorithm!r} runs inference on the nodes: give inference="
                "fpc.Inference(node_tx, steps), e.g. fpc.Inference(optax.sgd(0.01), 8)."
            )
        elif algorithm == "ipc" and inference.to_equilibrium:
            raise ValueError(
                "algorithm='ipc' takes a weight step at every inference step, so it has no "
                "inference to equilibrium: use an Inference without a tolerance and with an "
                "optax node_tx."
            )
        elif algorithm == "ipc" and inference.steps == 0:
            raise ValueError(
                "algorithm='ipc' takes one weight step per inference step; with 0 steps it "
                "would never learn. Use an Inference with steps >= 1."
            )
        if not callable(output_energy):
            raise TypeError(
                "output_energy must be callable as energy(targets, output) -> [B], got "
                f"{type(output_energy).__name__}."
            )
        axis_name = named_axes.check_axis_name(axis_name)
        if axis_name is not None and algorithm != "bp" and inference and inference.to_equilibrium:
            raise ValueError(
                "axis_name with inference to equilibrium (a tolerance or a GradientFlow) is not "
                "supported: each device would stop at its own step. Use a fixed number of "
                "steps (an Inference without a tolerance, with an optax node_tx)."
            )
        if nudging is not None:
            if isinstance(nudging, bool) or not isinstance(nudging, (int, float)):
                raise TypeError(f"nudging must be a float beta or None, got {nudging!r}.")
            if nudging == 0:
                raise ValueError("nudging=0 gives no learning signal; use beta != 0 or None.")
            if output_energy in _PROBABILITIES and not 0 < nudging <= 1:
                raise ValueError(
                    f"nudging={nudging} with fpc.energies.{output_energy.__name__}: the nudged "
                    "targets (1 - beta) * p + beta * y would leave the probabilities [0, 1], "
                    "where the energy has no minimum. Use 0 < beta <= 1."
                )
        state = super().create(
            apply_fn=apply_fn,
            params=params,
            tx=tx,
            inference=inference,
            output_energy=output_energy,
            algorithm=algorithm,
            nudging=None if nudging is None else float(nudging),
            model_state=check_model_state(model_state),
            axis_name=axis_name,
            **kwargs,
        )
        # A strongly typed step: the state that comes out of a jitted step has
        # the same types as the one that goes in, so the step compiles once.
        return state.replace(step=jnp.zeros((), jnp.int32))

    def train_step(
        self, inputs: PyTree, targets: PyTree, rng: RNG | None = None
    ) -> tuple[PCTrainState, dict[str, Any]]:
        """One batch of training; call it under ``jax.jit``.

        Args:
          inputs: ``[B, ...]``, or any pytree of arrays (NumPy's too) sharing
            the leading batch axis ``B``, e.g. a tuple ``(tokens, lengths)`` or
            a dict: the model's one input argument.
          targets: ``[B, *out_features]``, the shape of the model output (for
            the built-in output energies), or any pytree of arrays ``[B, ...]``
            that a custom ``output_energy(targets, output)`` takes.
          rng: ``None``, a PRNG key or an int seed (feeds the streams
            ``'pc_noise'`` and ``'dropout'`` with keys derived from it), or a
            dict ``{stream: key or seed}`` naming every stream the model draws
            from. A key is used as given: pass a new key per step
            (``jax.random.fold_in(key, step)``). An int seed gives every step
            new keys by itself (``jax.random.key(seed)`` folded with
            ``state.step``, as ``nnx.Rngs(seed)`` gives a new key per draw).
            The same keys serve every pass of the batch (one dropout mask); a
            :func:`~flax_pc.langevin` ``node_tx`` draws new noise at every
            step from the :data:`~flax_pc.NOISE` key, and needs one.

        Returns:
          ``(new_state, metrics)``, where ``metrics['energy']`` is the
          batch-mean total energy at every inference step, ``[T + 1]``
          (before the first step ... after the last);
          ``metrics['energy_rose']``, a bool scalar: ``True`` when an
          inference step raised that energy by more than 1e-4 of
          ``energy[0]`` (or 8 machine epsilons of its dtype, if more: the node
          step is too large; ``False`` for ``'bp'``);
          ``metrics['node_energies']``, ``{path: scalar}``, the batch-mean
          energy of each node after inference; ``metrics['loss']``, the
          batch-mean output energy of the feed-forward prediction;
          ``metrics['inference_steps']``, the node steps taken (``T``; 0 for
          ``'bp'``). Means are over the true batch size (with ``axis_name``,
          the whole batch over every device). With a ``tolerance`` see the
          class doc.
        """
        rngs = as_rngs(rng, step=self.step)
        return _train_step(self, batches.as_arrays(inputs), batches.as_arrays(targets), rngs)


def _warn_no_nodes() -> None:
    user_warnings.warn(
        "PCTrainState: the model has no value nodes (flax_pc.PCNode), so train_step is plain "
        "backprop of output_energy. Put fpc.PCNode() after hidden layers, or wrap the "
        "apply_fn in fpc.with_nodes."
    )


def _inference(state: PCTrainState) -> Inference:
    """``state.inference`` where it must be given (``create`` checked it for pc and ipc)."""
    assert state.inference is not None
    return state.inference


def _optax_node_tx(state: PCTrainState) -> optax.GradientTransformation:
    """The node transform where it must be an optax one (``create`` checked it)."""
    node_tx = _inference(state).node_tx
    assert not isinstance(node_tx, GradientFlow)
    return node_tx


def _energy_length(state: PCTrainState) -> int:
    """The length of ``metrics['energy']``: ``T + 1``, 2 to equilibrium, 1 for bp."""
    if state.algorithm == "bp":
        return 1
    inference = _inference(state)
    return 2 if inference.to_equilibrium else inference.steps + 1


def _scale(tree: PyTree, factor: float) -> PyTree:
    if factor == 1.0:
        return tree
    return jax.tree_util.tree_map(lambda g: g * factor, tree)


def _updated(model_state: dict[str, PyTree], collections: dict[str, PyTree]) -> dict[str, PyTree]:
    """``model_state`` with the collections the model returned."""
    return {name: collections.get(name, value) for name, value in model_state.items()}


#: The output energies whose prediction is logits: the map to the targets' space
#: (probabilities), where nudging mixes the output with the targets.
_PROBABILITIES: dict[Any, Any] = {
    _energies.cross_entropy: functools.partial(jax.nn.softmax, axis=-1),
    _energies.bernoulli: jax.nn.sigmoid,
}


def _nudged(state: PCTrainState, output: PyTree, targets: PyTree) -> PyTree:
    """The output nudged towards the targets: ``out - beta * (out - y)``, held fixed;
    for logits, ``p - beta * (p - y)`` with ``p`` the output's probabilities."""
    assert state.nudging is not None
    beta = state.nudging
    if jax.tree_util.tree_structure(output) != jax.tree_util.tree_structure(targets):
        raise ValueError(
            "nudging moves the output towards the targets, so targets must have the "
            f"structure of the model's output: got targets {batches.describe(targets)} for "
            f"an output {batches.describe(output)}."
        )
    mean = _PROBABILITIES.get(state.output_energy, lambda out: out)
    nudged = jax.tree_util.tree_map(
        lambda out, y: mean(out) - beta * (mean(out) - y), output, targets
    )
    return jax.lax.stop_gradient(nudged)


def _train_step(state: PCTrainState, inputs: PyTree, targets: PyTree, rngs):
    if state.algorithm == "ipc":
        batch = _prepare(state, inputs, targets, rngs)
        state, metrics = _ipc_step(state, batch, langevin.noise_key(rngs))
        return state.replace(model_state=batch.model_state), metrics
    grads, metrics, model_state = step_gradient(state, inputs, targets, rngs)
    state = state.apply_gradients(grads=grads)
    return state.replace(model_state=model_state), metrics


def step_gradient(
    state: PCTrainState, inputs: PyTree, targets: PyTree, rngs: Any
) -> tuple[PyTree, dict[str, Any], PyTree]:
    """One ``'pc'`` or ``'bp'`` ``train_step`` but its weight step.

    Returns ``(grads, metrics, model_state)``: ``grads`` as ``tx`` gets them
    (times ``1 / beta`` under nudging; the whole batch's under ``axis_name``),
    ``train_step``'s metrics, and the model state after the step.
    """
    if state.algorithm == "bp":
        return _bp_gradient(state, inputs, targets, rngs)
    if state.algorithm != "pc":
        raise ValueError(
            f"algorithm={state.algorithm!r} takes a weight step at every inference step, so a "
            "batch has no one weight gradient; 'pc' and 'bp' have one."
        )
    batch = _prepare(state, inputs, targets, rngs)
    inference, nodes = _inference(state), batch.nodes
    steps = inference.steps
    if not nodes:  # nothing to infer: skip the steps, keep the shapes
        before, steps = jnp.zeros((0,)), 0
    elif inference.to_equilibrium:
        result = equilibrium.infer_to_equilibrium(
            state.apply_fn, state.params, nodes, inputs, batch.clamp, inference=inference,
            output_energy=state.output_energy, model_state=state.model_state, rng=rngs,
        )  # fmt: skip
        nodes, before, steps = result.nodes, result.initial_energy[None], result.steps
    else:
        nodes, trajectory = run_inference(
            state.apply_fn, state.params, nodes, inputs, batch.clamp, inference=inference,
            output_energy=state.output_energy, model_state=state.model_state, rng=rngs,
            forward_initialized=batch.forward,
        )  # fmt: skip
        before = trajectory.total
    grads, final = _weight_gradient(state, batch.total, nodes)
    metrics = step_metrics.step_metrics(
        before, final, batch.loss, batch.batch_size, steps, state.axis_name
    )
    if not nodes:
        metrics["energy"] = jnp.full((_energy_length(state),), metrics["energy"][-1])
    return _scale(grads, batch.grad_scale), metrics, batch.model_state


class _Batch(NamedTuple):
    """What the inference of a 'pc' or 'ipc' step starts from."""

    nodes: PyTree  # initialised
    forward: bool  # the nodes hold the feed-forward values
    clamp: PyTree  # the targets, or the nudged output
    grad_scale: float  # 1 / beta under nudging
    loss: Array  # the feed-forward output energy, batch-summed
    batch_size: int
    model_state: PyTree  # after the feed-forward pass
    total: Callable[[PyTree, PyTree], tuple[Array, network_energy.Energy]]  # F(params, nodes)


def _prepare(state: PCTrainState, inputs: PyTree, targets: PyTree, rngs: Any) -> _Batch:
    batch_size = batches.check_batch(inputs, targets)
    named_axes.warn_if_unnamed(state.axis_name)
    initial = initialization.initialize(
        state.apply_fn, state.params, inputs, model_state=state.model_state, rng=rngs
    )
    # The feed-forward prediction; with value_init='forward' XLA merges this
    # pass with the initialisation's (common subexpressions), so it costs
    # nothing. Its updates of the model state (running averages) are kept.
    output, collections = apply_model(
        state.apply_fn, state.params, inputs, model_state=state.model_state, rngs=rngs
    )
    loss = jnp.sum(
        network_energy.output_energy_of(state.output_energy, targets, output, batch_size)
    )
    if not initial.nodes:
        _warn_no_nodes()

    clamp, grad_scale = targets, 1.0
    if state.nudging is not None:
        clamp = _nudged(state, output, targets)
        grad_scale = 1.0 / state.nudging

    def total(params, nodes):
        result = network_energy.energy(
            state.apply_fn, params, nodes, inputs, clamp, output_energy=state.output_energy,
            model_state=state.model_state, rng=rngs,
        )  # fmt: skip
        return result.total, result

    if initial.nodes:  # once per trace: a node that cannot change the output energy is named
        dead_nodes.warn_dead_nodes(
            lambda nodes: total(state.params, nodes)[1], initial.nodes, apply_fn=state.apply_fn
        )
    return _Batch(
        initial.nodes, initial.forward, clamp, grad_scale, loss, batch_size,
        _updated(state.model_state, collections), total,
    )  # fmt: skip


def _weight_gradient(state: PCTrainState, total, nodes) -> tuple[PyTree, network_energy.Energy]:
    """``dF/dparams`` at ``nodes`` (over the whole batch under ``axis_name``), and the energy."""
    params = named_axes.own_share(state.params, state.axis_name)
    grads, result = jax.grad(total, has_aux=True)(params, nodes)
    return named_axes.total(grads, state.axis_name), result


def _bp_gradient(state: PCTrainState, inputs: PyTree, targets: PyTree, rngs: Any):
    """Backprop on the same model: params-only forward pass, batch-summed loss."""
    batch_size = batches.check_batch(inputs, targets)
    named_axes.warn_if_unnamed(state.axis_name)

    def loss_fn(params):
        output, collections = apply_model(
            state.apply_fn, params, inputs, model_state=state.model_state, rngs=rngs
        )
        per_example = network_energy.output_energy_of(
            state.output_energy, targets, output, batch_size
        )
        return jnp.sum(per_example), collections

    params = named_axes.own_share(state.params, state.axis_name)
    (loss, collections), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    metrics = step_metrics.backprop_metrics(
        loss, batch_size, _energy_length(state), state.axis_name
    )
    grads = named_axes.total(grads, state.axis_name)
    return grads, metrics, _updated(state.model_state, collections)


def _ipc_step(state: PCTrainState, batch: _Batch, noise):
    """Incremental PC: ``T`` joint steps, both gradients taken at the same point.

    ``noise``: ``langevin.noise_key`` of the batch's rngs, or ``None``.
    """

    def step(carry, index):
        state, nodes, node_opt_state = carry
        params = named_axes.own_share(state.params, state.axis_name)
        grads, result = jax.grad(batch.total, argnums=(0, 1), has_aux=True)(params, nodes)
        param_grads, node_grads = grads
        key = langevin.step_key(noise, index)
        updates, node_opt_state = langevin.update_nodes(
            node_tx, node_grads, node_opt_state, nodes, key
        )
        nodes = optax.apply_updates(nodes, updates)
        param_grads = named_axes.total(param_grads, state.axis_name)
        state = state.apply_gradients(grads=_scale(param_grads, batch.grad_scale))
        return (state, nodes, node_opt_state), result

    node_tx = _optax_node_tx(state)
    inference = _inference(state)
    init = (state, batch.nodes, node_tx.init(batch.nodes))
    (state, nodes, _), trajectory = jax.lax.scan(
        step, init, jnp.arange(inference.steps), unroll=inference.scan_unroll
    )
    _, final = batch.total(state.params, nodes)
    metrics = step_metrics.step_metrics(
        trajectory.total, final, batch.loss, batch.batch_size, inference.steps, state.axis_name
    )
    return state, metrics
