"""The reference MLP trained by plain backprop, for comparison with default.py (pcax tutorial 0b).

The same network, data, squared-error loss, Adam and schedule as default.py;
algorithm='bp' ignores the value nodes and the node fields. Expect about 96% on MNIST.
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """default.py's workload, trained by backprop."""
    config = default_lib.get_config()

    # The baseline PC is compared with: everything else stays default.py's.
    config.algorithm = "bp"

    return config
