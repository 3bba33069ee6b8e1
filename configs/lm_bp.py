"""configs/lm.py's Transformer trained by plain backprop: the baseline PC is compared with.

The same model, data, cross-entropy loss, Adam and batches; algorithm='bp'
ignores the value nodes and the node fields.
"""

import ml_collections

from configs import lm as lm_lib


def get_config() -> ml_collections.ConfigDict:
    """lm.py's workload, trained by backprop."""
    config = lm_lib.get_config()

    # The baseline PC is compared with: everything else stays lm.py's.
    config.algorithm = "bp"

    return config
