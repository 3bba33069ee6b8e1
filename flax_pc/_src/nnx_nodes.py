"""``fpc.nnx.PCNode``: the value node of a Flax NNX model.

An ``nnx.Module`` you put between layers, as :class:`flax_pc.PCNode` is in
linen. Called by you (``model(x)``), it returns its prediction: the model is
the plain feed-forward network at any batch size, in ``model.train()`` and
``model.eval()`` alike. The ``fpc.nnx`` functions (``train_step``,
``init_nodes``, ``energy``, ``infer``, ...) run the model through linen's
``apply`` contract (see :mod:`flax_pc._src.nnx_apply`), which sets each node's
part for one call, as linen's collections do:

=====================  ====================================================
the call               ``PCNode(...)(prediction)`` returns
=====================  ====================================================
plain (yours, or a     ``prediction``
feed-forward pass)
initialise             a new latent made from the prediction (stored in the
                       node's :class:`NodeValue`), and the value from it
value                  the stored value (``v``, or ``mu + e`` for ePC)
energy                 the stored value; records ``energy(value, prediction)``
=====================  ====================================================

The node's latent lives in a :class:`NodeValue` variable named ``value`` (or
``error`` for ``latent='error'``), the name it has in linen's
:data:`~flax_pc.NODES` collection, so ``nnx.state(model, fpc.nnx.NodeValue)``
is that collection. It holds ``None`` until :func:`flax_pc.nnx.init_nodes`
puts a batch's latents there; ``train_step`` leaves it as it finds it (the
nodes are per batch, and a state whose shape changed would recompile the step).

Nodes in layers stacked by ``nnx.vmap`` and run by ``nnx.scan`` work as in
linen's ``nn.scan``: the node's latent is stacked (``[L, B, ...]``) and its
energy, ``[L, B]``, is summed over the stack.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp
from flax import nnx

from flax_pc import energies as _energies
from flax_pc._src.nodes import (
    LATENTS,
    NODES,
    VALUE_INITS,
    Latent,
    NewLatent,
    ValueInit,
)
from flax_pc._src.types import Array, EnergyFn

__all__ = ["NodeValue", "PCNode"]


class NodeValue(nnx.Variable):
    """The variable type of a node's latent: its value ``v`` (or its error ``e`` for ePC).

    Select the nodes of a model with it, as with any NNX variable type:
    ``nnx.state(model, fpc.nnx.NodeValue)``. It holds ``None`` outside a
    batch (see the module doc); ``nnx.Optimizer(model, tx, wrt=nnx.Param)``
    leaves it alone.
    """


# A linen model wrapped by nnx.bridge.ToNNX keeps its NODES collection as NodeValue
# variables, so that the same filter selects the nodes of both kinds of model.
nnx.register_variable_name(NODES, NodeValue, overwrite=True)


class NodeEnergy(nnx.Variable):
    """The variable type each node sows its energy ``[B]`` into (captured by the adapter)."""


Mode = Literal["initialize", "value", "energy", "missing"]


@dataclasses.dataclass(frozen=True)
class NodeRole:
    """The node's part in one of the adapter's calls (``None``: a plain call).

    Attributes:
      mode: ``'initialize'`` (make the latent), ``'value'`` (use the stored
        one), ``'energy'`` (use it and record the energy) or ``'missing'``
        (energies asked for, no latent given: an error if the node is called).
      path: the node's path in the model, for error messages.
    """

    mode: Mode
    path: str


class PCNode(nnx.Module):
    """A predictive-coding value node for NNX models.

    Create one ``PCNode`` per place in the model: a node is one latent
    variable, so calling the same instance twice in one pass is an error.
    The arguments are those of the linen :class:`flax_pc.PCNode`, with the
    same meaning.

    Args:
      energy: ``energy(value, prediction) -> [B]``; default
        :func:`flax_pc.energies.squared_error`.
      precision: inverse variance ``pi`` that multiplies this node's energy.
      value_init: how a batch's latent is made from the prediction ``mu``:
        ``'forward'`` (``v = mu``, default), ``'zeros'`` or ``'normal'``
        (``v ~ N(0, value_init_stddev^2)``, drawn from the key of the stream
        :data:`~flax_pc.NODE_RNG` that ``rngs=`` of ``train_step`` /
        ``init_nodes`` gives; a node stacked by ``nnx.scan``/``nnx.vmap``
        draws a value per layer).
      value_init_stddev: standard deviation for ``value_init='normal'``.
      latent: ``'value'`` (PC: inference moves ``v``) or ``'error'`` (ePC:
        inference moves ``e = v - mu``; see :class:`flax_pc.PCNode`).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flax_pc as fpc
      >>> class MLP(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.hidden = nnx.Linear(4, 8, rngs=rngs)
      ...         self.node = fpc.nnx.PCNode()  # a value node
      ...         self.out = nnx.Linear(8, 2, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.out(self.node(nnx.tanh(self.hidden(x))))
      >>> model = MLP(nnx.Rngs(0))
      >>> model(jnp.ones((3, 4))).shape  # your call: plain feed-forward
      (3, 2)
      >>> nodes = fpc.nnx.init_nodes(model, jnp.ones((3, 4)))  # a batch's nodes
      >>> nnx.state(model, fpc.nnx.NodeValue)["node"]["value"].shape
      (3, 8)
    """

    def __init__(
        self,
        energy: EnergyFn = _energies.squared_error,
        precision: float = 1.0,
        value_init: ValueInit = "forward",
        value_init_stddev: float = 1.0,
        latent: Latent = "value",
    ):
        if value_init not in VALUE_INITS:
            raise ValueError(
                f"PCNode(value_init={value_init!r}): value_init must be one of {VALUE_INITS}."
            )
        if latent not in LATENTS:
            raise ValueError(
                f"PCNode(latent={latent!r}): latent must be 'value' (PC: inference moves the "
                "node's value) or 'error' (ePC: it moves the node's error)."
            )
        if not callable(energy):
            raise TypeError(
                "PCNode(energy=...) must be callable as energy(value, prediction) -> [B], got "
                f"{type(energy).__name__}."
            )
        self.energy = energy
        self.precision = precision
        self.value_init = value_init
        self.value_init_stddev = value_init_stddev
        self.latent = latent
        # Named as in linen's NODES collection: 'value', or 'error' for ePC.
        setattr(self, latent, NodeValue(None))
        self.role: NodeRole | None = None  # set by the adapter on its copy of the model

    @property
    def forward(self) -> bool:
        """Whether a new latent starts at the prediction with a zero-gradient energy there."""
        return self.value_init == "forward" and self.energy is _energies.squared_error

    def __call__(self, prediction: Array) -> Array:
        """Returns ``prediction`` when you call it; see the module doc for the adapter's calls.

        Args:
          prediction: ``mu``, the output of the layer below, ``[B, *features]``.
        """
        call = self.role
        if call is None:
            return prediction
        variable: NodeValue = getattr(self, self.latent)
        if call.mode == "missing":
            raise ValueError(
                f"PCNode at {call.path}: energies were asked for but this node has no "
                f"{self.latent} for the batch. Make the nodes first: fpc.nnx.init_nodes(model, "
                "inputs)."
            )
        if call.mode == "initialize":
            # The variable holds None, or the value the adapter drew for value_init='normal'
            # (held as state, so nnx.scan/nnx.vmap give each layer of a stack its own).
            drawn = variable.get_value()
            if isinstance(drawn, NewLatent):  # this pass made it already
                raise self._called_twice(call.path)
            latent = self._initial_latent(prediction, drawn)
            # Boxed with how it was made, as linen's new latents are.
            variable.set_value(NewLatent(latent, forward=self.forward))
            return self._value(latent, prediction)

        latent = variable.get_value()
        if latent.shape != prediction.shape:
            raise ValueError(
                f"PCNode at {call.path}: the stored {self.latent} has shape "
                f"{tuple(latent.shape)} but the prediction has shape "
                f"{tuple(prediction.shape)}. The nodes come from a batch of another size (or "
                "another model); make new ones for this batch with fpc.nnx.init_nodes."
            )
        value = self._value(latent, prediction)
        if call.mode == "energy":
            node_energy = self.energy(value, prediction)
            if self.precision != 1.0:
                node_energy = self.precision * node_energy
            self.sow(NodeEnergy, "energy", node_energy, reduce_fn=_once(self, call.path))
        return value

    def _called_twice(self, path: str) -> ValueError:
        return ValueError(
            f"PCNode at {path} was called twice in one pass. A node holds one value, so two "
            "call sites would share it (and its energy would be wrong); create one PCNode per "
            "call site, e.g. one fpc.nnx.PCNode() per layer in an nnx.List."
        )

    def _value(self, latent: Array, prediction: Array) -> Array:
        return latent if self.latent == "value" else prediction + latent

    def _initial_latent(self, prediction: Array, drawn: Array | None) -> Array:
        if self.value_init == "forward":
            value = prediction
        elif self.value_init == "zeros":
            value = jnp.zeros_like(prediction)
        else:  # 'normal': drawn by the adapter (None while it finds the shapes)
            value = jnp.zeros_like(prediction) if drawn is None else drawn
        if self.latent == "value":
            return value
        if self.value_init == "forward":
            return jnp.zeros_like(prediction)  # e = v - mu = 0, exactly
        return value - prediction


def _once(node: PCNode, path: str):
    """``sow``'s reduce function: the first energy of the pass; a second is an error."""

    def reduce(previous: tuple, energy: Array) -> tuple:
        if previous:
            raise node._called_twice(path)
        return (energy,)

    return reduce
