"""Trains a predictive-coding network on MNIST.

    python examples/mnist/main.py --config=configs/default.py --workdir=workdir/default

The logic lives in ``train.py`` (``train_nnx.py`` for a model written in Flax NNX,
``config.flax_api = 'nnx'``); the flags in ``examples/common/workdir.py``.
"""

from typing import Any

from absl import app

from examples.common import workdir as workdir_lib
from examples.mnist import train


def train_and_evaluate(config: Any, workdir: str) -> Any:
    """``train.train_and_evaluate``, or ``train_nnx``'s for ``config.flax_api = 'nnx'``."""
    if config.flax_api == "nnx":
        from examples.mnist import train_nnx  # imported only for NNX configs

        return train_nnx.train_and_evaluate(config, workdir)
    return train.train_and_evaluate(config, workdir)


main = workdir_lib.make_main(train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
