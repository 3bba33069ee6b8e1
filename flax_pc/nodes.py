"""``PCNode``: a value node you put between the layers of a linen model.

The node's value ``v`` lives in the Flax variable collection
:data:`NODES` (``'pc_nodes'``) under the name ``'value'``; the energy it
records, ``energy(v, mu)`` per example, is sown into :data:`ENERGIES`
(``'pc_energies'``). The node takes its mode from the collections passed to
``apply``, never from a flag threaded through the model:

=====================================================  =====================================
``apply`` call                                         ``PCNode(...)(prediction)`` returns
=====================================================  =====================================
``apply({'params': p}, x)``                            ``prediction`` (plain feed-forward)
``apply({'params': p}, x, mutable=[NODES])``           the new ``value``, made from the
                                                       prediction (``init='forward'``:
                                                       ``value = prediction``)
``apply({'params': p, NODES: n}, x,                    the stored ``value``; records
mutable=[ENERGIES])``                                  ``energy(value, prediction)``
=====================================================  =====================================

In a call that records no energies, a node without a stored value while
others have one (e.g. only the top latent of a decoder is given) passes its
prediction on, as in a params-only call.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from flax_pc import energies as _energies

Array = jax.Array
EnergyFn = Callable[[Array, Array], Array]

#: Collection holding the value nodes (``'value'`` in each ``PCNode``).
NODES = "pc_nodes"
#: Collection into which each ``PCNode`` sows its per-example energy ``[B]``.
ENERGIES = "pc_energies"
#: Name of the RNG stream used by ``PCNode(init='normal')``.
NODE_RNG = "pc_nodes"

NODE_INITS = ("forward", "zeros", "normal")
# Internal: during initialisation each node sows whether it was forward
# initialised, so the train step knows when every hidden error starts at zero.
_FORWARD_INIT = "pc_forward_init"


class PCNode(nn.Module):
    """A predictive-coding value node.

    Attributes:
      energy: ``energy(value, prediction) -> [B]``; default
        :func:`flax_pc.energies.squared_error`.
      precision: inverse variance ``pi`` that multiplies this node's energy
        (``pi * energy(v, mu)``), e.g. to weight layers differently.
      init: how a new value is made from the prediction ``mu`` when the
        :data:`NODES` collection is mutable and holds no value yet:
        ``'forward'`` (``v = mu``, default), ``'zeros'`` (``v = 0``) or
        ``'normal'`` (``v ~ N(0, init_stddev^2)``, drawn from the RNG stream
        :data:`NODE_RNG`, so pass ``rngs={'pc_nodes': key}``).
      init_stddev: standard deviation for ``init='normal'``.
    """

    energy: EnergyFn = _energies.squared_error
    precision: float = 1.0
    init: str = "forward"
    init_stddev: float = 1.0

    @nn.compact
    def __call__(self, prediction: Array) -> Array:
        """Returns the node's value (or ``prediction``, see the module doc).

        Args:
          prediction: ``mu``, the output of the layer below, ``[B, *features]``.
        """
        if self.init not in NODE_INITS:
            raise ValueError(f"PCNode(init={self.init!r}): init must be one of {NODE_INITS}.")
        has_value = self.has_variable(NODES, "value")
        if not has_value:
            if self.is_mutable_collection(NODES):
                if self.is_mutable_collection(_FORWARD_INIT):
                    self.sow(_FORWARD_INIT, "forward", self.init == "forward")
                # The layers above initialise from this node's new value (equal to
                # the prediction for init='forward'), so their errors start at zero.
                return self.variable(NODES, "value", self._initial_value, prediction).value
            if self.is_mutable_collection(ENERGIES):
                raise ValueError(
                    f"PCNode at {'/'.join(self.scope.path) or '<root>'}: energies were asked for "
                    f"(mutable {ENERGIES!r}) but no value nodes were given. Pass the nodes as "
                    f"variables: apply({{'params': params, flax_pc.NODES: nodes}}, ...), with "
                    "nodes from flax_pc.init_nodes."
                )
            # Params only: the network is exactly the plain feed-forward network.
            return prediction

        value = self.get_variable(NODES, "value")
        if value.shape != prediction.shape:
            raise ValueError(
                f"PCNode at {'/'.join(self.scope.path) or '<root>'}: the stored value has shape "
                f"{tuple(value.shape)} but the prediction has shape {tuple(prediction.shape)}. "
                "The nodes come from a batch of another size (or another model); make new "
                "ones for this batch with flax_pc.init_nodes."
            )
        node_energy = self.energy(value, prediction)
        if self.precision != 1.0:
            node_energy = self.precision * node_energy
        self.sow(ENERGIES, "energy", node_energy)
        return value

    def _initial_value(self, prediction: Array) -> Array:
        if self.init == "forward":
            return prediction
        if self.init == "zeros":
            return jnp.zeros_like(prediction)
        if not self.has_rng(NODE_RNG):
            raise ValueError(
                f"PCNode(init='normal') draws its initial value from the RNG stream {NODE_RNG!r}: "
                f"pass rngs={{{NODE_RNG!r}: key}} (flax_pc.init_nodes(..., rng=key))."
            )
        key = self.make_rng(NODE_RNG)
        return self.init_stddev * jax.random.normal(key, prediction.shape, prediction.dtype)
