"""``EnergyTerm``: an energy of the network that no node owns.

A :class:`~flax_pc.PCNode` owns a value and the energy of its prediction. Some
energies compare values the model already has: bidirectional PC's backward
predictions (the layer above predicting the one below), a prior on a node,
lateral predictions. ``EnergyTerm(...)(value, prediction)`` adds such an
energy to the network's: it is sown into :data:`~flax_pc.ENERGIES` as a
node's is, so :func:`flax_pc.energy`, :func:`flax_pc.node_energies`, the
train step's metrics and every gradient of inference and learning include it.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from flax_pc import energies as _energies
from flax_pc._src.nodes import ENERGIES, NODES, module_path
from flax_pc._src.types import Array, EnergyFn

__all__ = ["EnergyTerm"]


class EnergyTerm(nn.Module):
    """Adds ``precision * energy(value, prediction)`` to the network's energy.

    The term owns no node: ``value`` and ``prediction`` are any arrays of the
    model (node values, inputs, layer outputs), and the gradients of its
    energy reach whatever they depend on (nodes in inference, params in the
    weight step). It does nothing in a call that records no energies (a
    plain feed-forward ``apply``, ``model.init``, :func:`flax_pc.init_nodes`)
    and returns nothing. Its energy is listed under its own module path
    (``'EnergyTerm_0'``) in :func:`flax_pc.node_energies` and the metrics. A
    term called twice in one pass adds both energies (listed as
    ``'EnergyTerm_0'`` and ``'EnergyTerm_0#1'``).

    A model with a term is never given the first-step shortcut of a forward
    initialisation (whose hidden errors are zero, but not the term's), so
    inference starts from the full energy.

    Attributes:
      energy: ``energy(value, prediction) -> [B]``; default
        :func:`flax_pc.energies.squared_error`.
      precision: the weight ``pi >= 0`` of the term (an inverse variance for
        ``squared_error``), e.g. bidirectional PC's ``alpha_b``.

    Example:
      Bidirectional PC's backward prediction of the input from the node above it:

      >>> import flax_pc as fpc
      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> class Bidirectional(nn.Module):
      ...     features: int = 8
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         z = fpc.PCNode()(nn.Dense(self.features)(x))  # forward: z predicted from x
      ...         fpc.EnergyTerm(precision=0.5)(x, nn.Dense(4)(z))  # backward: x from z
      ...         return nn.Dense(2)(z)
      >>> model, x, y = Bidirectional(), jnp.ones((3, 4)), jnp.zeros((3, 2))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> nodes = fpc.init_nodes(model.apply, params, x)
      >>> sorted(fpc.energy(model.apply, params, nodes, x, y).nodes)
      ['EnergyTerm_0', 'PCNode_0']
    """

    energy: EnergyFn = _energies.squared_error
    precision: float = 1.0

    def __call__(self, value: Array, prediction: Array) -> None:
        """Records ``precision * energy(value, prediction)`` (``[B]``) if energies are recorded.

        Args:
          value: what is predicted, ``[B, *features]``.
          prediction: its prediction, the same shape.
        """
        if not callable(self.energy):
            raise TypeError(
                f"EnergyTerm at {module_path(self)}: energy must be callable as "
                f"energy(value, prediction) -> [B], got {type(self.energy).__name__}."
            )
        if not isinstance(self.precision, jax.Array) and (
            isinstance(self.precision, bool)
            or not isinstance(self.precision, (int, float))
            or not self.precision >= 0
        ):
            raise ValueError(
                f"EnergyTerm at {module_path(self)}: precision must be a number >= 0, got "
                f"{self.precision!r}."
            )
        if getattr(value, "shape", None) != getattr(prediction, "shape", None):
            raise ValueError(
                f"EnergyTerm at {module_path(self)}: value has shape "
                f"{getattr(value, 'shape', None)} but prediction has shape "
                f"{getattr(prediction, 'shape', None)}; they must match."
            )
        # Energies are recorded in the energy pass only, not where nodes are made.
        if not self.is_mutable_collection(ENERGIES) or self.is_mutable_collection(NODES):
            return
        term = self.energy(value, prediction)
        if isinstance(self.precision, jax.Array) or self.precision != 1.0:
            term = self.precision * term
        self.sow(ENERGIES, "energy", term)
