"""Predictive coding for Flax NNX models: the same maths as the linen path.

Put :class:`PCNode` between the layers of an ``nnx.Module`` and train it with
:func:`train_step` inside your ``nnx.jit`` function, with an ``nnx.Optimizer``
for the weights::

    model = MLP(rngs=nnx.Rngs(0))  # an nnx.Module with fpc.nnx.PCNode()s
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        return fpc.nnx.train_step(model, optimizer, x, y,
                                  node_tx=optax.sgd(0.1), inference_steps=8)

    metrics = step(model, optimizer, x_batch, y_batch)  # updates model, optimizer
    logits = model(x_test)  # the plain feed-forward network

Every function here runs the linen path's own code on the NNX model (the
model is bound to linen's ``apply`` contract, ``nnx.split``/``nnx.merge``), so
energies, node values and weight updates equal those of
:class:`flax_pc.PCTrainState` for the same network and weights. A linen model
with :class:`flax_pc.PCNode`\\ s wrapped by ``nnx.bridge.ToNNX`` trains through
:func:`train_step` too.
"""

from flax_pc._src.nnx_layers import ScaledLinear
from flax_pc._src.nnx_nodes import NodeValue, PCNode
from flax_pc._src.nnx_temporal import infer_sequence, predict_sequence, train_sequence
from flax_pc._src.nnx_training import energy, infer, infer_to_equilibrium, init_nodes, train_step

__all__ = [
    "NodeValue",
    "PCNode",
    "ScaledLinear",
    "energy",
    "infer",
    "infer_sequence",
    "infer_to_equilibrium",
    "init_nodes",
    "predict_sequence",
    "train_sequence",
    "train_step",
]
