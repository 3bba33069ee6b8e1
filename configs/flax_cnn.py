"""Flax's own MNIST CNN, written as Flax writes it, trained by predictive coding.

The model (``model='flax_cnn'``) has no ``PCNode``: ``fpc.with_nodes`` puts a
value node on the input of every ``nn.Conv``/``nn.Dense`` call but the first,
i.e. after each hidden activation (conv 32 -> pool -> [node] conv 64 -> pool
-> [node] Dense 256 -> [node] Dense 10). Trained like ``cnn.py``, for Flax's
10 epochs with a cosine learning-rate decay. Start from a backprop run's
weights with ``--config.init_checkpoint=<its workdir>``.
"""

import ml_collections

from configs import cnn as cnn_lib


def get_config() -> ml_collections.ConfigDict:
    """Flax's CNN, trained like cnn.py."""
    config = cnn_lib.get_config()

    # Flax's MNIST CNN as Flax writes it (conv 32, conv 64, Dense 256), nodes by with_nodes.
    config.model = "flax_cnn"
    # As long as Flax's example trains it.
    config.num_epochs = 10
    # The last epochs at a small step settle the weights.
    config.lr_schedule = "cosine"

    return config
