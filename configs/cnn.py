"""A convolutional PC network on MNIST: a value node after each conv block.

The layout of Flax's MNIST CNN (3x3 conv -> pool -> 3x3 conv -> pool -> Dense ->
Dense 10) at half its width, between it and PyTorch's example in size: conv
16 -> 2x2 avg pool -> conv 32 -> 2x2 avg pool -> Dense 128 -> Dense 10, relu, a
value node after each conv block and after the hidden Dense layer; trained
like default.py. Plain ``nn.Conv``; about 20 s per epoch on a 2-core CPU, where
``loop='auto'`` trains it with a jitted step per batch.
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """The CNN's hyperparameters."""
    config = default_lib.get_config()

    # Conv blocks of default.py's conv_features (16, 32) before the Dense layers.
    config.model = "cnn"
    # Flax's MNIST CNN's head: one hidden Dense layer after the conv blocks.
    config.hidden_sizes = (128,)
    # As in Flax's and PyTorch's MNIST CNNs.
    config.activation = "relu"

    return config
