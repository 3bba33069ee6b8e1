"""Fashion-MNIST with the reference MLP trained by incremental PC (iPC), tuned.

fashion_mnist.py's settings with algorithm='ipc', then tuned for iPC on the
same validation split (the last 10k training images): weight learning rate
(1e-4 to 2e-3), node learning rate (0.01 to 1.0), node momentum, T (4 to 16),
batch size (128, 256), epochs (12, 25), AdamW weight decay, activation.
iPC takes T weight steps per batch and wants much stronger inference than PC:
with tanh, node lr 0.01 gave 82.2%, 0.1 86.5%, 0.3 88.1%, 0.8 (T=8) 89.3%,
1.0 88.2% on validation. The activation mattered most: at node lr 0.8, silu
89.9% (mean of two seeds), gelu 89.8%, leaky_relu 89.6%, tanh 89.3% (one seed
each). PC's tuned config (tanh): 89.7-89.8%; PC with silu: 89.8%. On the test
set over seeds 0-9, iPC with this config and PC with fashion_mnist.py tie
(89.61% and 89.62%).
"""

import ml_collections

from configs import fashion_mnist as fashion_mnist_lib


def get_config() -> ml_collections.ConfigDict:
    """The tuned Fashion-MNIST hyperparameters for incremental PC."""
    # fashion_mnist.py's tuned settings (dataset, output energy, schedule, batch, epochs).
    config = fashion_mnist_lib.get_config()

    # The learning rule this config is tuned for.
    config.algorithm = "ipc"
    # The activation mattered most: silu 89.9% on validation, tanh 89.3%.
    config.activation = "silu"
    # iPC wants much stronger inference than PC: node lr 0.01 gave 82.2% on validation,
    # 0.8 with T=8 89.3% (with tanh).
    config.inference_steps = 8
    # See inference_steps; 1.0 was worse again (88.2%).
    config.node_learning_rate = 0.8

    return config
