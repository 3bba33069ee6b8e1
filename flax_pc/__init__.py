"""flax_pc: predictive coding for Flax models.

Put :class:`PCNode` after the layers of a linen model (or let
:func:`with_nodes` place them), train it with :class:`PCTrainState`; or build
your own loop from :func:`init_nodes`, :func:`energy` and :func:`infer`.

Everything public is here and in the submodules :mod:`flax_pc.energies`,
:mod:`flax_pc.diagnostics` and :mod:`flax_pc.nnx` (Flax NNX models);
``flax_pc._src`` holds the implementation and is not API.
"""

from flax_pc import diagnostics, energies, nnx
from flax_pc._src.auto_nodes import with_nodes
from flax_pc._src.equilibrium import Equilibrium, GradientFlow, infer_to_equilibrium
from flax_pc._src.inference import Energy, energy, infer, init_nodes, node_energies
from flax_pc._src.langevin import langevin
from flax_pc._src.loops import epoch_batches, train_epoch
from flax_pc._src.mupc import ScaledDense, mupc_scalings
from flax_pc._src.nodes import ENERGIES, NODE_RNG, NODES, PCNode
from flax_pc._src.parallel import DataParallel
from flax_pc._src.terms import EnergyTerm
from flax_pc._src.train_state import PCTrainState

__version__ = "0.2.0"

__all__ = [
    "DataParallel",
    "ENERGIES",
    "Energy",
    "EnergyTerm",
    "Equilibrium",
    "GradientFlow",
    "NODES",
    "NODE_RNG",
    "PCNode",
    "PCTrainState",
    "ScaledDense",
    "diagnostics",
    "energies",
    "energy",
    "epoch_batches",
    "infer",
    "infer_to_equilibrium",
    "init_nodes",
    "langevin",
    "mupc_scalings",
    "nnx",
    "node_energies",
    "train_epoch",
    "with_nodes",
]
