"""flax_pc: predictive coding for Flax models.

Put :class:`PCNode` after the layers of a linen model (or let
:func:`with_nodes` place them), say how the nodes settle with an
:class:`Inference`, train it with :class:`PCTrainState`; or build your own
loop from :func:`init_nodes`, :func:`energy` and :func:`infer`.

Everything public is here and in the submodules :mod:`flax_pc.energies`,
:mod:`flax_pc.diagnostics`, :mod:`flax_pc.nnx` (Flax NNX models) and
:mod:`flax_pc.temporal` (sequences);
``flax_pc._src`` holds the implementation and is not API.
"""

from flax_pc import diagnostics, energies, nnx, temporal
from flax_pc._src.auto_nodes import with_nodes
from flax_pc._src.equilibrium import Equilibrium, infer_to_equilibrium
from flax_pc._src.gradient_flow import GradientFlow
from flax_pc._src.inference import Inference, infer
from flax_pc._src.initialization import init_nodes
from flax_pc._src.langevin import langevin
from flax_pc._src.loops import epoch_batches, train_epoch
from flax_pc._src.mupc import ScaledDense, mupc_scalings
from flax_pc._src.network_energy import Energy, energy, node_energies
from flax_pc._src.nodes import ENERGIES, NODES, NOISE, PCNode
from flax_pc._src.parallel import DataParallel
from flax_pc._src.terms import EnergyTerm
from flax_pc._src.train_state import PCTrainState

__version__ = "0.3.0"

__all__ = [
    "DataParallel",
    "ENERGIES",
    "Energy",
    "EnergyTerm",
    "Equilibrium",
    "GradientFlow",
    "Inference",
    "NODES",
    "NOISE",
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
    "temporal",
    "train_epoch",
    "with_nodes",
]


def __getattr__(name: str):
    # Deprecated names of flax_pc 0.2, kept until 0.4.
    if name == "NODE_RNG":
        import warnings

        warnings.warn(
            "fpc.NODE_RNG is deprecated and goes in flax_pc 0.4: use fpc.NOISE (the RNG stream "
            "'pc_noise').",
            DeprecationWarning,
            stacklevel=2,
        )
        return NOISE
    raise AttributeError(f"module 'flax_pc' has no attribute {name!r}")
