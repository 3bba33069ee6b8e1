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

from flax import nnx

from flax_pc import energies as _energies
from flax_pc._src import node_rules
from flax_pc._src.node_rules import Latent, NewLatent, ValueInit
from flax_pc._src.nodes import NODES
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
        :data:`~flax_pc.NOISE` that ``rngs=`` of ``train_step`` /
        ``init_nodes`` gives and the node's path, by the linen path's rule: a
        linen model with its nodes at the same paths draws the same values
        from the same key; a node stacked by ``nnx.scan``/``nnx.vmap`` draws
        a value per layer). The options are checked here.
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
        node_rules.check_options(energy, value_init, value_init_stddev, latent)
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
        return node_rules.starts_at_prediction(self.value_init, self.energy)

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
            raise node_rules.missing_nodes(call.path, self.latent, _MAKE_NODES)
        if call.mode == "initialize":
            # The variable holds None, or the value drawn for value_init='normal' (held
            # as state, so nnx.scan/nnx.vmap give each layer of a stack its own).
            drawn = variable.get_value()
            if isinstance(drawn, NewLatent):  # this pass made it already
                raise node_rules.called_twice(call.path)
            new = node_rules.new_latent(
                prediction, value_init=self.value_init, latent=self.latent,
                value_init_stddev=self.value_init_stddev, energy=self.energy, drawn=drawn,
            )  # fmt: skip
            variable.set_value(new)  # boxed with how it was made, as linen's new latents are
            return node_rules.value_of(self.latent, new.value, prediction)

        latent = variable.get_value()
        node_rules.check_latent_shape(call.path, self.latent, latent, prediction, _INIT_NODES)
        value = node_rules.value_of(self.latent, latent, prediction)
        if call.mode == "energy":
            node_energy = self.energy(value, prediction)
            node_rules.check_energy_shape(call.path, node_energy, prediction)
            if self.precision != 1.0:
                node_energy = self.precision * node_energy
            self.sow(NodeEnergy, "energy", node_energy, reduce_fn=_once(call.path))
        return value


_INIT_NODES = "fpc.nnx.init_nodes"
_MAKE_NODES = f"Make the nodes first: {_INIT_NODES}(model, inputs)."


def _once(path: str):
    """``sow``'s reduce function: the first energy of the pass; a second is an error."""

    def reduce(previous: tuple, energy: Array) -> tuple:
        if previous:
            raise node_rules.called_twice(path)
        return (energy,)

    return reduce
