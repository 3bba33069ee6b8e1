"""Fashion-MNIST with the reference MLP (784-128-128-128-10, tanh, a value node per layer), tuned.

Changed from default.py: cross-entropy output energy, a cosine learning-rate
decay over 25 epochs, batch 128. Tuned on a validation split (the last 10k
training images; about 30 s per 25-epoch trial) over output energy,
activation (tanh, gelu, leaky_relu), node learning rate (0.01-0.1), T (4, 8),
node momentum, weight learning rate, schedule, batch size (64-256), epochs
(6-40) and AdamW weight decay. Stronger inference (node lr 0.1, or T=8 with
momentum) did not help; squared error reached 89.2% where cross-entropy
reached 89.8% on validation.
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """The tuned Fashion-MNIST hyperparameters."""
    config = default_lib.get_config()

    # The workload of this config.
    config.dataset = "fashion_mnist"
    # Tuned: 89.8% on validation, where squared error reached 89.2%.
    config.output_energy = "cross_entropy"
    # Tuned (with num_epochs and batch_size) on the validation split.
    config.lr_schedule = "cosine"
    # Tuned over 64-256 on the validation split.
    config.batch_size = 128
    # Tuned over 6-40 on the validation split; the cosine decay spans them.
    config.num_epochs = 25

    return config
