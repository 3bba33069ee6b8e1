"""The reference MLP trained by incremental PC (iPC): nodes and weights step together.

default.py with algorithm='ipc': at each of the T=4 inference steps both the
node and the weight gradient are taken at the same point and both applied,
so there are T weight updates per batch instead of one.
"""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """default.py's workload, trained by incremental PC."""
    config = default_lib.get_config()

    # The variant under study; everything else stays default.py's, so the two compare directly.
    config.algorithm = "ipc"

    return config
