"""``PCNode``: a value node you put between the layers of a linen model.

The node's value ``v`` lives in the Flax variable collection
:data:`~flax_pc.NODES` (``'pc_nodes'``) under the name ``'value'`` (with
``latent='error'``, its error ``e = v - mu`` under ``'error'``); the energy it
records, ``energy(v, mu)`` per example, is sown into :data:`~flax_pc.ENERGIES`
(``'pc_energies'``). The node takes its mode from the collections passed to
``apply``, never from a flag threaded through the model:

==========================================================  ==================================
``apply`` call                                              ``PCNode(...)(prediction)`` returns
==========================================================  ==================================
``apply({'params': p}, x)``                                 ``prediction`` (plain feed-forward)
``apply({'params': p}, x, mutable=[NODES])``                the new ``value``, made from the
                                                            prediction (``value_init='forward'``:
                                                            ``value = prediction``; ``'normal'``:
                                                            zeros, a placeholder, see below)
``apply({'params': p, NODES: n}, x, mutable=[ENERGIES])``   the stored ``value``; records
                                                            ``energy(value, prediction)``
==========================================================  ==================================

New values come boxed in a flax ``AxisMetadata`` (like ``nn.Partitioned``:
``apply`` reads through it, ``nn.meta.unbox`` removes it) that records how they
were made; :func:`flax_pc.init_nodes` returns them unboxed. A node with
``value_init='normal'`` does not draw in ``apply``: its box asks for a draw,
which :func:`flax_pc.init_nodes` (and ``train_step``) makes, from the
:data:`~flax_pc.NOISE` key and the latent's path in :data:`~flax_pc.NODES`
alone, so that a linen and an NNX model draw the same values; ``model.init``
stores zeros.

In a call that records no energies, a node without a stored value while
others have one (e.g. only the top latent of a decoder is given) passes its
prediction on, as in a params-only call.

Under a lifted transform (``nn.scan``, ``nn.RNN``, ``nn.vmap``) list
:data:`~flax_pc.NODES` and :data:`~flax_pc.ENERGIES` in ``variable_axes``, on
any axis (``variable_axes={'params': 0, NODES: 0, ENERGIES: 0}`` for a stack of
layers, ``nn.RNN(cell, variable_axes={NODES: 1, ENERGIES: 1})`` for a node per
time step of a batch-major sequence): a node there sows its energy in a box
that records where the batch axis went, and flax_pc sums it over the stacked
axes. A transform that does not carry both collections would drop the node;
:func:`flax_pc.init_nodes` (and so ``train_step``) raises an error that names it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from flax import struct
from flax.core import meta

from flax_pc import energies as _energies
from flax_pc._src import node_rules
from flax_pc._src.node_rules import DrawnValue, Latent, NewLatent, ValueInit
from flax_pc._src.types import Array, EnergyFn

#: Collection holding the value nodes (``'value'`` in each ``PCNode``).
NODES = "pc_nodes"
#: Collection into which each ``PCNode`` sows its per-example energy ``[B]``.
ENERGIES = "pc_energies"
#: The RNG stream of the nodes' own randomness (``'pc_noise'``):
#: ``PCNode(value_init='normal')`` draws its initial values from it,
#: :func:`~flax_pc.langevin` its noise. A bare key passed as ``rng`` feeds it.
NOISE = "pc_noise"

__all__ = ["ENERGIES", "NODES", "NOISE", "PCNode"]


class StackedEnergy(struct.PyTreeNode, meta.AxisMetadata[Array]):
    """The energy a ``PCNode`` sows inside a lifted transform, and where its batch axis is.

    ``nn.scan``, ``nn.vmap`` (and ``nn.RNN``, a scan) stack what is sown along
    the axis their ``variable_axes`` give :data:`ENERGIES` and tell the box
    (``add_axis``), as they tell ``nn.Partitioned``; so ``[B]`` becomes
    ``[L, B]`` (axis 0) or ``[B, T]`` (axis 1) and the box knows which is which.

    Attributes:
      value: the sown energy, ``[B]`` plus the stacked axes.
      batch_axis: the position of the batch axis in ``value``.
    """

    value: Array
    batch_axis: int = struct.field(pytree_node=False, default=0)

    def unbox(self) -> Array:
        return self.value

    def replace_boxed(self, val: Any) -> StackedEnergy:
        return self.replace(value=val)

    def add_axis(self, index: int, params: dict) -> StackedEnergy:
        index %= self.value.ndim  # ``value`` holds the new axis already
        return self.replace(batch_axis=self.batch_axis + (index <= self.batch_axis))

    def remove_axis(self, index: int, params: dict) -> StackedEnergy:
        index %= self.value.ndim  # ``value`` still holds the axis
        return self.replace(batch_axis=self.batch_axis - (index < self.batch_axis))

    def batch_last(self) -> Array:
        """``value`` with the batch axis moved last: ``[*stacked, B]``."""
        return jnp.moveaxis(self.value, self.batch_axis, -1)


def module_path(module: nn.Module) -> str:
    """``'Block_0/PCNode_1'``: where ``module`` sits in the model, for error messages."""
    return "/".join(module.scope.path) if module.scope is not None else "<unbound>"


def lifted_transforms(module: nn.Module) -> tuple[str, ...]:
    """The lifted transforms ``module`` is called in, outermost first (``()`` for none).

    Linen runs the body of ``nn.scan``, ``nn.vmap``, ``nn.remat``, ``nn.jit``, ...
    in a new root scope whose debug path names the transform: ``'scan(Cell_0)'``,
    ``'remat(scan(Block_0))'``; a module outside them has a root with no path.
    """
    scope = module.scope
    if scope is None:
        return ()
    while scope.parent is not None:
        scope = scope.parent
    names: list[str] = []
    for part in scope.debug_path:  # 'remat(scan(Block_0))': remat inside scan
        inner_first = []
        while "(" in part:
            name, part = part.split("(", 1)
            inner_first.append(name)
        names.extend(reversed(inner_first))
    if scope.debug_path and not names:
        names.append("lifted transform")
    return tuple(names)


class PCNode(nn.Module):
    """A predictive-coding value node.

    Create one ``PCNode`` per place in the model: a node is one latent
    variable, so calling the same instance twice is an error.

    Attributes:
      energy: ``energy(value, prediction) -> [B]``; default
        :func:`flax_pc.energies.squared_error`.
      precision: inverse variance ``pi`` that multiplies this node's energy
        (``pi * energy(v, mu)``), e.g. to weight layers differently.
      value_init: how a new value is made from the prediction ``mu`` when the
        :data:`NODES` collection is mutable and holds no value yet:
        ``'forward'`` (``v = mu``, default), ``'zeros'`` (``v = 0``) or
        ``'normal'`` (``v ~ N(0, value_init_stddev^2)``, drawn by
        :func:`flax_pc.init_nodes` from the key of the RNG stream :data:`NOISE`
        and the node's path, so pass ``rng=key`` or ``rng={fpc.NOISE: key}``).
        The options are checked when the node is made.
      value_init_stddev: standard deviation for ``value_init='normal'``.
      latent: what inference moves. ``'value'`` (standard PC): the node stores
        its value ``v`` in :data:`NODES` as ``'value'``. ``'error'`` (ePC,
        Goemaere et al. 2026): the node stores its error ``e = v - mu`` as
        ``'error'`` (``value_init='forward'`` is ``e = 0``), returns
        ``mu + e`` and records ``energy(mu + e, mu)``. The energy and its
        minima are the same; what differs is the path to them: a step on
        ``e`` moves ``v_l`` *and*, through the layers above, every value after
        it, so one step reaches every layer (a step on ``v`` reaches one
        layer further per step). The weight gradient is taken with the errors
        held fixed, so it equals PC's at equilibrium but not before it.

    Example:
      >>> import flax_pc as fpc
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         x = fpc.PCNode()(nn.tanh(nn.Dense(8)(x)))  # a value node
      ...         return nn.Dense(2)(x)
      >>> model, x = MLP(), jnp.ones((3, 4))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> model.apply({"params": params}, x).shape  # params only: feed-forward
      (3, 2)
      >>> nodes = fpc.init_nodes(model.apply, params, x)  # forward initialisation
      >>> jax.tree_util.tree_map(jnp.shape, nodes)
      {'PCNode_0': {'value': (3, 8)}}
      >>> _, sown = model.apply(
      ...     {"params": params, fpc.NODES: nodes}, x, mutable=[fpc.ENERGIES]
      ... )
      >>> fpc.node_energies(sown[fpc.ENERGIES])["PCNode_0"].tolist()  # v == mu
      [0.0, 0.0, 0.0]
    """

    energy: EnergyFn = _energies.squared_error
    precision: float = 1.0
    value_init: ValueInit = "forward"
    value_init_stddev: float = 1.0
    latent: Latent = "value"

    def __post_init__(self) -> None:
        node_rules.check_options(self.energy, self.value_init, self.value_init_stddev, self.latent)
        super().__post_init__()

    @nn.compact
    def __call__(self, prediction: Array) -> Array:
        """Returns the node's value (or ``prediction``, see the module doc).

        Args:
          prediction: ``mu``, the output of the layer below, ``[B, *features]``.
        """
        name = self.latent  # the variable's name in NODES: 'value' or 'error'
        stored = self.get_variable(NODES, name)
        if self.is_mutable_collection(NODES) and (stored is None or _made(stored)):
            if isinstance(stored, NewLatent):  # made by this pass
                raise node_rules.called_twice(module_path(self))
            # The layers above initialise from this node's new value (equal to
            # the prediction for value_init='forward'), so their errors start at zero.
            new = node_rules.new_latent(
                prediction, value_init=self.value_init, latent=self.latent,
                value_init_stddev=self.value_init_stddev, energy=self.energy,
                drawn=stored.value if isinstance(stored, DrawnValue) else None,
            )  # fmt: skip
            # model.init: plain arrays, as for any variable.
            self.put_variable(NODES, name, new.value if self.is_initializing() else new)
            return node_rules.value_of(self.latent, new.value, prediction)
        if stored is None:
            if self.is_mutable_collection(ENERGIES):
                raise node_rules.missing_nodes(module_path(self), name, _MAKE_NODES)
            # Params only: the network is exactly the plain feed-forward network.
            return prediction

        latent = meta.unbox(stored)
        node_rules.check_latent_shape(
            module_path(self), name, latent, prediction, "flax_pc.init_nodes"
        )
        if self.is_mutable_collection(ENERGIES) and self.has_variable(ENERGIES, "energy"):
            raise node_rules.called_twice(module_path(self))
        value = node_rules.value_of(self.latent, latent, prediction)
        node_energy = self.energy(value, prediction)
        node_rules.check_energy_shape(module_path(self), node_energy, prediction)
        if self.precision != 1.0:
            node_energy = self.precision * node_energy
        if lifted_transforms(self):  # the transform stacks it: keep track of the batch axis
            node_energy = StackedEnergy(node_energy)
        self.sow(ENERGIES, "energy", node_energy)
        return value


_MAKE_NODES = (
    "Pass the nodes as variables: apply({'params': params, flax_pc.NODES: nodes}, ...), "
    "with nodes from flax_pc.init_nodes."
)


def _made(stored: Any) -> bool:
    """Whether ``stored`` is a latent of the node initialisation: made by this pass, or drawn."""
    return isinstance(stored, (NewLatent, DrawnValue))
