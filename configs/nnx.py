"""The reference MLP written in Flax NNX: ``models_nnx.MLP``, trained by ``fpc.nnx.train_step``.

default.py's workload (MLP 784-128-128-128-10, tanh, T=4, node SGD 0.01,
Adam 1e-3, batch 256, 4 epochs) with the model an ``nnx.Module`` instead of a
linen one: examples/mnist/main.py hands the run to ``train_nnx.py``, which
writes the same workdir. Same maths as the linen path (``fpc.nnx``), so the
accuracy is default.py's within seed noise (examples/mnist/README.md).
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """default.py's workload, with the MLP written in Flax NNX."""
    config = default_lib.get_config()

    # The variant under study; everything else stays default.py's, so the two compare directly.
    config.flax_api = "nnx"

    return config
