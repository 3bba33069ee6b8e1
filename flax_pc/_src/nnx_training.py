"""``fpc.nnx``'s functions: train, initialise the nodes, the energy, inference.

Each binds the NNX model to linen's ``apply`` contract (:mod:`flax_pc._src.nnx_apply`)
and calls the linen path's own function, so both paths run the same maths.
They change the model in place, as NNX's own functions do: ``train_step``
its params (and its other state: running averages, RNG counts) and the
optimiser; ``init_nodes``, ``infer`` and ``infer_to_equilibrium`` its nodes
(:class:`~flax_pc.nnx.NodeValue`). The others read it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flax_pc import energies as _energies
from flax_pc._src import equilibrium, initialization, network_energy
from flax_pc._src.inference import (
    EQUILIBRIUM_KEYWORDS,
    FIXED_STEP_KEYWORDS,
    Inference,
    from_keywords,
)
from flax_pc._src.inference import infer as linen_infer
from flax_pc._src.nnx_apply import Bound, bind, check_model
from flax_pc._src.nnx_nodes import NodeValue
from flax_pc._src.nodes import NOISE
from flax_pc._src.rngs import as_rngs
from flax_pc._src.train_state import DEPRECATED_KEYWORDS, Algorithm, PCTrainState
from flax_pc._src.types import Array, OutputEnergyFn, PyTree

__all__ = ["energy", "infer", "infer_to_equilibrium", "init_nodes", "train_step"]

#: What ``rngs=`` takes: an ``nnx.Rngs`` (its :data:`~flax_pc.NOISE` stream, or
#: its default), one ``nnx.RngStream``, or a PRNG key.
Rngs = nnx.Rngs | nnx.RngStream | Array


def _require_nodes(bound: Bound, function: str) -> None:
    if bound.node_paths is not None and not bound.node_paths:
        raise ValueError(
            f"fpc.nnx.{function}: the model has no fpc.nnx.PCNode, so there are no nodes to "
            "infer. Put one after each hidden layer (self.node = fpc.nnx.PCNode(); "
            "x = self.node(x)), or train the plain network with algorithm='bp'."
        )


def _node_key(rngs: Rngs | None, function: str) -> Array | None:
    """The :data:`~flax_pc.NOISE` key of one call from ``rngs`` (a stream's is drawn: it advances).

    A bare key gives the noise key that the linen path's ``rng=key`` gives, so
    both paths draw the same node values and noise from the same key.
    """
    if rngs is None:
        return None
    if isinstance(rngs, nnx.Rngs):
        try:
            rngs = rngs[NOISE]
        except KeyError:
            raise ValueError(
                f"fpc.nnx.{function}: rngs has no {NOISE!r} stream and no default stream "
                f"to fall back on: give nnx.Rngs({NOISE}=seed) (or nnx.Rngs(seed))."
            ) from None
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array) and jnp.issubdtype(rngs.dtype, jax.dtypes.prng_key):
        streams = as_rngs(rngs)
        assert streams is not None
        return streams[NOISE]
    raise TypeError(
        f"fpc.nnx.{function}: rngs must be an nnx.Rngs, an nnx.RngStream or a key from "
        f"jax.random.key, got {type(rngs).__name__}."
    )


def _call_rngs(bound: Bound, key: Array | None, *, advance: bool) -> dict[str, Array]:
    """The ``rngs`` of every pass of one call: the node key and a ToNNX model's streams.

    A ToNNX model's streams give one key each per call, for every pass (one
    dropout mask); ``advance`` moves them on (``train_step``: once per step).
    """
    rngs = {}
    for name, stream in bound.rng_streams.items():
        # What stream() returns, without moving the stream on.
        rngs[name] = jax.random.fold_in(stream.key[...], stream.count[...])
        if advance:
            stream.count[...] += 1
    if key is not None:
        rngs[NOISE] = key
    return rngs


def _stored_nodes(model: nnx.Module) -> PyTree:
    """The model's nodes (:class:`NodeValue`) as linen's ``NODES`` collection; ``{}`` for none."""
    flat = {
        path: variable.get_value()
        for path, variable in nnx.to_flat_state(nnx.state(model, NodeValue))
        if variable.get_value() is not None
    }
    return nnx.traversals.unflatten_mapping(flat)


def _stateful(model: Any, function: str) -> nnx.Module:
    """``model`` if its nodes can hold a batch (an NNX model, not a ToNNX one)."""
    model = check_model(model, function)
    if isinstance(model, nnx.bridge.ToNNX):
        raise TypeError(
            f"fpc.nnx.{function} works on the nodes an NNX model keeps (fpc.nnx.NodeValue); "
            "a linen model wrapped by nnx.bridge.ToNNX keeps its linen PCNodes' values as "
            "the wrapper's variables, which its own calls read. Train it with "
            "fpc.nnx.train_step, or use flax_pc's linen functions on its linen module "
            "(fpc.init_nodes(model.to_nnx__module.apply, params, x), ...)."
        )
    return model


def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    inputs: PyTree,
    targets: PyTree,
    *,
    inference: Inference | None = None,
    output_energy: OutputEnergyFn = _energies.squared_error,
    algorithm: Algorithm = "pc",
    nudging: float | None = None,
    rngs: Rngs | None = None,
    **deprecated: Any,
) -> dict[str, Any]:
    """One batch of PC training of an NNX model; call it inside your ``nnx.jit`` function.

    The step of :meth:`flax_pc.PCTrainState.train_step`, on the NNX model:
    for ``'pc'``, the nodes are initialised by a forward pass, ``inference.steps``
    steps of ``inference.node_tx`` move them, and one step of ``optimizer`` on
    ``dF/dparams`` at the final nodes updates ``model`` (in place, as
    ``optimizer.update(model, grads)`` does: ``optimizer.tx`` on
    ``optimizer.opt_state``; ``optimizer.step`` counts the weight steps).
    The arguments after ``targets`` mean what they mean there.

    **State and randomness.** Call ``model.train()`` before training and
    ``model.eval()`` before evaluating, as for any NNX model. ``nnx.BatchNorm``
    normalises with the batch's statistics through inference and the weight
    step; its running averages move once per step, from the feed-forward pass
    (equal to the linen path's). ``nnx.Dropout`` draws the same mask in every
    pass of the step (one energy for inference to descend), and a new one at
    the next step: every pass starts from the model's RNG state, and the
    feed-forward pass's advance is kept. The model's nodes
    (:class:`~flax_pc.nnx.NodeValue`) are left as they are.

    Args:
      model: an ``nnx.Module`` with :class:`~flax_pc.nnx.PCNode`\\ s, or a
        linen model wrapped by ``nnx.bridge.ToNNX``; returns one array, the
        output layer's prediction.
      optimizer: ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; its ``wrt``
        says which variables train.
      inputs: ``[B, ...]``.
      targets: ``[B, *out_features]``, the shape of the model's output.
      inference, output_energy, algorithm, nudging: as in
        :meth:`flax_pc.PCTrainState.create` (``'bp'`` takes ``inference`` and
        does not use it).
      rngs: for the nodes' own randomness (``PCNode(value_init='normal')``,
        :func:`~flax_pc.langevin`): an ``nnx.Rngs`` (one key drawn from its
        :data:`~flax_pc.NOISE` stream, or its default, per step: a new key
        at every step), an ``nnx.RngStream``, or a key from
        ``jax.random.key``, used as given (pass a new one per step; it gives
        the draws the linen path's ``rng=key`` gives).
      **deprecated: ``node_tx=``, ``inference_steps=``, ``tolerance=``,
        ``unroll=`` (flax_pc 0.2), which warn and go in 0.4.

    Returns:
      The metrics of :meth:`flax_pc.PCTrainState.train_step`, with the same
      keys and meanings: ``energy`` ``[T + 1]``, ``node_energies``
      ``{path: scalar}`` (paths like ``'layers/2'``), ``loss``,
      ``inference_steps``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import flax_pc as fpc
      >>> model = nnx.Sequential(
      ...     nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.tanh, fpc.nnx.PCNode(),
      ...     nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
      >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
      >>> @nnx.jit
      ... def step(model, optimizer, x, y):
      ...     return fpc.nnx.train_step(model, optimizer, x, y,
      ...                               inference=fpc.Inference(optax.sgd(0.1), 4))
      >>> metrics = step(model, optimizer, jnp.ones((3, 4)), jnp.zeros((3, 2)))
      >>> metrics["energy"].shape, sorted(metrics["node_energies"])
      ((5,), ['layers/2'])
    """
    model = check_model(model, "train_step")
    if not isinstance(optimizer, nnx.Optimizer):
        raise TypeError(
            "fpc.nnx.train_step: optimizer must be an nnx.Optimizer(model, tx, wrt=nnx.Param), "
            f"got {type(optimizer).__name__}."
        )
    inference = from_keywords(
        "fpc.nnx.train_step", inference, deprecated,
        keywords=DEPRECATED_KEYWORDS, required=False,
    )  # fmt: skip
    bound = bind(model, optimizer.wrt)
    if algorithm != "bp":
        _require_nodes(bound, "train_step")
    state = PCTrainState.create(
        apply_fn=bound.apply, params=bound.params, tx=optimizer.tx, inference=inference,
        output_energy=output_energy, algorithm=algorithm, nudging=nudging,
        model_state=bound.model_state,
    )  # fmt: skip
    state = state.replace(opt_state=nnx.as_pure(optimizer.opt_state), step=optimizer.step[...])
    rngs_of_step = _call_rngs(bound, _node_key(rngs, "train_step"), advance=True)
    state, metrics = state.train_step(inputs, targets, rngs_of_step)
    bound.write(state.params, state.model_state)
    nnx.update(optimizer.opt_state, nnx.state(state.opt_state))
    optimizer.step[...] = state.step
    return metrics


def init_nodes(model: nnx.Module, inputs: PyTree, *, rngs: Rngs | None = None) -> nnx.State:
    """Initialises the model's nodes for one batch by a forward pass, in place.

    Each :class:`~flax_pc.nnx.PCNode` makes its latent from its prediction as
    its ``value_init`` says (:func:`flax_pc.init_nodes` on the NNX model).
    The model's other state (running averages, RNG counts) is not changed.

    Args:
      model: an ``nnx.Module`` with :class:`~flax_pc.nnx.PCNode`\\ s.
      inputs: a batch, ``[B, ...]``.
      rngs: for ``PCNode(value_init='normal')``, as in :func:`train_step`.

    Returns:
      The nodes, ``nnx.state(model, fpc.nnx.NodeValue)``.
    """
    model = _stateful(model, "init_nodes")
    bound = bind(model)
    _require_nodes(bound, "init_nodes")
    nodes = initialization.init_nodes(
        bound.apply, bound.params, inputs, model_state=bound.model_state,
        rng=_call_rngs(bound, _node_key(rngs, "init_nodes"), advance=False),
    )  # fmt: skip
    nnx.update(model, nodes)
    return nnx.state(model, NodeValue)


def energy(
    model: nnx.Module,
    inputs: PyTree,
    targets: PyTree,
    *,
    output_energy: OutputEnergyFn = _energies.squared_error,
) -> network_energy.Energy:
    """The energy of the network at the model's nodes (:func:`flax_pc.energy`).

    Differentiable in the model's params, e.g. the weight gradient at the
    nodes: ``nnx.grad(lambda m: fpc.nnx.energy(m, x, y).total)(model)``.

    Args:
      model: an ``nnx.Module`` whose nodes hold a batch (:func:`init_nodes`).
      inputs: ``[B, ...]``.
      targets: ``[B, *out_features]``, the shape of the model's output.
      output_energy: ``energy(targets, output) -> [B]``.

    Returns:
      An :class:`~flax_pc.Energy`; its ``nodes`` are keyed by the nodes'
      paths (``'layers/2'``), as :mod:`flax_pc.diagnostics` takes them.
    """
    model = _stateful(model, "energy")
    bound = bind(model)
    return network_energy.energy(
        bound.apply, bound.params, _stored_nodes(model), inputs, targets,
        output_energy=output_energy, model_state=bound.model_state,
        rng=_call_rngs(bound, None, advance=False),
    )  # fmt: skip


def infer(
    model: nnx.Module,
    inputs: PyTree,
    targets: PyTree,
    *,
    inference: Inference | None = None,
    output_energy: OutputEnergyFn = _energies.squared_error,
    **deprecated: Any,
) -> network_energy.Energy:
    """Runs ``inference.steps`` steps of ``inference.node_tx`` on the model's nodes, in place.

    :func:`flax_pc.infer` on the NNX model: each step follows ``dF/dnodes``
    with the params fixed. Every pass sees the model's state as it is (one
    dropout mask); the model's state other than its nodes is not changed.

    Args:
      model: an ``nnx.Module`` whose nodes hold a batch (:func:`init_nodes`).
      inputs, targets, output_energy: as in :func:`energy`.
      inference: an :class:`~flax_pc.Inference` with a fixed number of steps,
        as in :func:`flax_pc.infer`.
      **deprecated: ``node_tx=``, ``inference_steps=``, ``unroll=`` (flax_pc
        0.2), which warn and go in 0.4.

    Returns:
      The :class:`~flax_pc.Energy` before each step, stacked (leading axis ``T``).
    """
    inference = from_keywords(
        "fpc.nnx.infer", inference, deprecated, keywords=FIXED_STEP_KEYWORDS, required=True
    )
    model = _stateful(model, "infer")
    bound = bind(model)
    _require_nodes(bound, "infer")
    nodes, energies = linen_infer(
        bound.apply, bound.params, _stored_nodes(model), inputs, targets,
        inference=inference, output_energy=output_energy,
        model_state=bound.model_state, rng=_call_rngs(bound, None, advance=False),
    )  # fmt: skip
    nnx.update(model, nodes)
    return energies


def infer_to_equilibrium(
    model: nnx.Module, inputs: PyTree, targets: PyTree, *,
    inference: Inference | None = None, output_energy: OutputEnergyFn = _energies.squared_error,
    **deprecated: Any,
) -> equilibrium.Equilibrium:  # fmt: skip
    """Runs inference on the model's nodes until ``rms(dF/dv) <= inference.tolerance``, in place.

    :func:`flax_pc.infer_to_equilibrium` on the NNX model.

    Args:
      model: an ``nnx.Module`` whose nodes hold a batch (:func:`init_nodes`).
      inputs, targets, output_energy: as in :func:`energy`.
      inference: as in :func:`flax_pc.infer_to_equilibrium`.
      **deprecated: ``node_tx=``, ``tolerance=``, ``max_steps=`` (flax_pc
        0.2), which warn and go in 0.4.

    Returns:
      An :class:`~flax_pc.Equilibrium` (its ``nodes`` are now the model's).
    """
    inference = from_keywords(
        "fpc.nnx.infer_to_equilibrium", inference, deprecated,
        keywords=EQUILIBRIUM_KEYWORDS, required=True,
    )  # fmt: skip
    model = _stateful(model, "infer_to_equilibrium")
    bound = bind(model)
    _require_nodes(bound, "infer_to_equilibrium")
    result = equilibrium.infer_to_equilibrium(
        bound.apply, bound.params, _stored_nodes(model), inputs, targets,
        inference=inference, output_energy=output_energy, model_state=bound.model_state,
        rng=_call_rngs(bound, None, advance=False),
    )  # fmt: skip
    nnx.update(model, result.nodes)
    return result
