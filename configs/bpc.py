"""Bidirectional PC (bPC): the reference MLP with backward weights too; it classifies and generates.

model='bpc' (examples/mnist/models_bpc.BPC): the layers of default.py's MLP
(784-128-128-128-10, tanh) with forward weights (the classifier, evaluated
by its feed-forward pass) and backward weights that predict each layer from
the one above, the label down to the image, their errors weighted by
backward_precision (bPC's alpha_b = 0.001, default.py's; the forward errors'
alpha_f is 1), and stronger inference (T=8, node SGD 0.1). After training, an
image per class is inferred with the label clamped and drawn into the
workdir's samples.png. Everything else is default.py's: compare with it and
backprop.py on the same data (``--config.dataset=fashion_mnist``).
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """default.py's workload, as bidirectional PC."""
    config = default_lib.get_config()

    # The bPC network instead of the feed-forward MLP.
    config.model = "bpc"
    # Stronger inference than PC's: the backward errors move every node from its first step,
    # while the label's error reaches the first layer only after a few steps of 0.01; with
    # default.py's T=4 and 0.01, bPC reached 80.9% on a Fashion-MNIST validation split (the
    # last 10k training images), 83.3% with these (PC: 86.1% either way).
    config.node_learning_rate = 0.1
    # As node_learning_rate (16 steps: no better, twice the time).
    config.inference_steps = 8

    return config
