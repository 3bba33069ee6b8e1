"""flax_pc: predictive coding for Flax linen models.

Put :class:`PCNode` after the layers of a linen model, train it with
:class:`PCTrainState`; or build your own loop from :func:`init_nodes`,
:func:`energy` and :func:`infer`.
"""

from flax_pc import energies
from flax_pc.auto_nodes import with_nodes
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
    "InitialNodes",
    "LATENTS",
    "NODES",
    "NODE_RNG",
    "NodeValue",
    "PCNode",
    "PCTrainState",
    "RNG_STREAMS",
    "VALUE_INITS",
    "as_rngs",
    "energies",
    "energy",
    "epoch_batches",
    "infer",
    "init_nodes",
    "initialize",
    "node_energies",
    "train_epoch",
    "with_nodes",
]
