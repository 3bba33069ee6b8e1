"""flax_pc: predictive coding for Flax linen models.

Put :class:`PCNode` after the layers of a linen model, train it with
:class:`PCTrainState`; or build your own loop from :func:`init_nodes`,
:func:`energy` and :func:`infer`.
"""

from flax_pc import energies
from flax_pc.auto_nodes import with_nodes
from flax_pc.diagnostics import (
    activity_hessian,
    energy_ratio,
    hessian_condition_number,
    layer_energies,
)
from flax_pc.equilibrium import Equilibrium, GradientFlow, infer_to_equilibrium, rms
from flax_pc.inference import (
    RNG_STREAMS,
    Energy,
    InitialNodes,
    as_rngs,
    energy,
    infer,
    init_nodes,
    initialize,
    node_energies,
)
from flax_pc.loops import epoch_batches, train_epoch
from flax_pc.mupc import MuPCScalings, ScaledDense, mupc_scalings
from flax_pc.nodes import (
    ENERGIES,
    LATENTS,
    NODE_RNG,
    NODES,
    VALUE_INITS,
    NodeValue,
    PCNode,
)
from flax_pc.parallel import DataParallel
from flax_pc.train_state import ALGORITHMS, PCTrainState

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "DataParallel",
    "ENERGIES",
    "Energy",
    "Equilibrium",
    "GradientFlow",
    "InitialNodes",
    "LATENTS",
    "MuPCScalings",
    "NODES",
    "NODE_RNG",
    "NodeValue",
    "PCNode",
    "PCTrainState",
    "RNG_STREAMS",
    "ScaledDense",
    "VALUE_INITS",
    "activity_hessian",
    "as_rngs",
    "energies",
    "energy",
    "energy_ratio",
    "epoch_batches",
    "hessian_condition_number",
    "infer",
    "infer_to_equilibrium",
    "init_nodes",
    "initialize",
    "layer_energies",
    "mupc_scalings",
    "node_energies",
    "rms",
    "train_epoch",
    "with_nodes",
]
