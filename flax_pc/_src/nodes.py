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
                                                            ``value = prediction``)
``apply({'params': p, NODES: n}, x, mutable=[ENERGIES])``   the stored ``value``; records
                                                            ``energy(value, prediction)``
==========================================================  ==================================

New values come boxed in a flax ``AxisMetadata`` (like ``nn.Partitioned``:
``apply`` reads through it, ``nn.meta.unbox`` removes it) that records how they
were made; :func:`flax_pc.init_nodes` returns them unboxed.

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

from typing import Any, Literal, cast, get_args

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct
from flax.core import meta

from flax_pc import energies as _energies
from flax_pc._src.types import Array, EnergyFn

#: Collection holding the value nodes (``'value'`` in each ``PCNode``).
NODES = "pc_nodes"
#: Collection into which each ``PCNode`` sows its per-example energy ``[B]``.
ENERGIES = "pc_energies"
#: The RNG stream of the nodes' own randomness: ``PCNode(value_init='normal')``
#: draws its initial values from it, :func:`~flax_pc.langevin` its noise.
#: A bare key passed as ``rng`` feeds it.
NODE_RNG = "pc_noise"

__all__ = ["ENERGIES", "NODES", "NODE_RNG", "PCNode"]

ValueInit = Literal["forward", "zeros", "normal"]
VALUE_INITS: tuple[str, ...] = get_args(ValueInit)
Latent = Literal["value", "error"]
LATENTS: tuple[str, ...] = get_args(Latent)


class NewLatent(struct.PyTreeNode, meta.AxisMetadata[Array]):
    """A new node latent (value or error), boxed with how it was made.

    ``PCNode`` returns its new values in this box from a call with
    :data:`NODES` mutable; :func:`flax_pc.init_nodes` unboxes them. The flag
    is static metadata, so it passes through ``nn.scan``, ``nn.vmap`` and
    ``nn.remat`` unchanged, where a sown flag would be stacked into an array.

    Attributes:
      value: the node's latent (its value ``v``, or its error ``e`` for
        ``latent='error'``), ``[B, *features]``.
      forward: ``True`` when the node starts at its prediction (``e = 0``)
        and its energy is :func:`~flax_pc.energies.squared_error` (whose
        gradient is zero there), so it adds nothing to the first inference
        step's gradient, which the first step exploits.
    """

    value: Array
    forward: bool = struct.field(pytree_node=False)

    def unbox(self) -> Array:
        return self.value

    def replace_boxed(self, val: Any) -> NewLatent:
        return self.replace(value=val)

    def add_axis(self, index: int, params: dict) -> NewLatent:
        return self

    def remove_axis(self, index: int, params: dict) -> NewLatent:
        return self


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
        ``'normal'`` (``v ~ N(0, value_init_stddev^2)``, drawn from the RNG
        stream :data:`NODE_RNG`, so pass ``rng=key`` or ``rngs={fpc.NODE_RNG: key}``).
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
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> import flax_pc as fpc
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

    @nn.compact
    def __call__(self, prediction: Array) -> Array:
        """Returns the node's value (or ``prediction``, see the module doc).

        Args:
          prediction: ``mu``, the output of the layer below, ``[B, *features]``.
        """
        if self.value_init not in VALUE_INITS:
            raise ValueError(
                f"PCNode(value_init={self.value_init!r}): value_init must be one of {VALUE_INITS}."
            )
        if self.latent not in LATENTS:
            raise ValueError(
                f"PCNode(latent={self.latent!r}): latent must be 'value' (PC: inference "
                "moves the node's value) or 'error' (ePC: it moves the node's error)."
            )
        name = self.latent  # the variable's name in NODES: 'value' or 'error'
        if not self.has_variable(NODES, name):
            if self.is_mutable_collection(NODES):
                # The layers above initialise from this node's new value (equal to
                # the prediction for value_init='forward'), so their errors start at zero.
                variable = self.variable(NODES, name, self._initial_latent, prediction)
                return self._value(cast(Array, variable.value), prediction)  # linen unboxes
            if self.is_mutable_collection(ENERGIES):
                raise ValueError(
                    f"PCNode at {module_path(self)}: energies were asked for "
                    f"(mutable {ENERGIES!r}) but no value nodes were given. Pass the nodes as "
                    f"variables: apply({{'params': params, flax_pc.NODES: nodes}}, ...), with "
                    "nodes from flax_pc.init_nodes."
                )
            # Params only: the network is exactly the plain feed-forward network.
            return prediction

        latent = meta.unbox(self.get_variable(NODES, name))
        if latent.shape != prediction.shape:
            raise ValueError(
                f"PCNode at {module_path(self)}: the stored {name} has shape "
                f"{tuple(latent.shape)} but the prediction has shape {tuple(prediction.shape)}. "
                "The nodes come from a batch of another size (or another model); make new "
                "ones for this batch with flax_pc.init_nodes."
            )
        if self.is_mutable_collection(ENERGIES) and self.has_variable(ENERGIES, "energy"):
            raise ValueError(
                f"PCNode at {module_path(self)} was called twice in one pass. A node holds "
                "one value, so two call sites would share it (and its energy would be "
                "wrong); create one PCNode per call site, e.g. fpc.PCNode() inside the "
                "loop rather than one instance before it."
            )
        value = self._value(latent, prediction)
        node_energy = self.energy(value, prediction)
        if jnp.shape(node_energy) != prediction.shape[:1]:
            raise ValueError(
                f"PCNode at {module_path(self)}: its energy returned shape "
                f"{tuple(jnp.shape(node_energy))}; an energy returns one number per example, "
                f"[B] = {prediction.shape[:1]} (sum over the features)."
            )
        if self.precision != 1.0:
            node_energy = self.precision * node_energy
        if lifted_transforms(self):  # the transform stacks it: keep track of the batch axis
            node_energy = StackedEnergy(node_energy)
        self.sow(ENERGIES, "energy", node_energy)
        return value

    def _value(self, latent: Array, prediction: Array) -> Array:
        return latent if self.latent == "value" else prediction + latent

    def _initial_latent(self, prediction: Array) -> Array | NewLatent:
        if self.latent == "error" and self.value_init == "forward":
            latent = jnp.zeros_like(prediction)
        else:
            value = self._draw_value(prediction)
            latent = value if self.latent == "value" else value - prediction
        if self.is_initializing():  # model.init: plain arrays, as for any variable.
            return latent
        forward = self.value_init == "forward" and self.energy is _energies.squared_error
        return NewLatent(latent, forward=forward)

    def _draw_value(self, prediction: Array) -> Array:
        if self.value_init == "forward":
            return prediction
        if self.value_init == "zeros":
            return jnp.zeros_like(prediction)
        if not self.has_rng(NODE_RNG):
            raise ValueError(
                f"PCNode(value_init='normal') draws its initial value from the RNG stream "
                f"{NODE_RNG!r}: pass rngs={{{NODE_RNG!r}: key}} "
                "(flax_pc.init_nodes(..., rng=key), or train_step(..., rng=key))."
            )
        key = self.make_rng(NODE_RNG)
        return self.value_init_stddev * jax.random.normal(key, prediction.shape, prediction.dtype)
