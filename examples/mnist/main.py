"""Trains a predictive-coding network on MNIST.

    python examples/mnist/main.py --config=configs/default.py --workdir=workdir/default

The logic lives in ``train.py`` (``train_nnx.py`` for a model written in Flax
NNX, ``config.flax_api = 'nnx'``); the flags in ``examples.common.cli``.
"""

from typing import Any

from absl import app

from examples.common import cli
from examples.mnist import train, train_nnx


def train_and_evaluate(config: Any, workdir: str) -> Any:
    """``train.train_and_evaluate``, or ``train_nnx``'s for ``config.flax_api = 'nnx'``."""
    return (train_nnx if config.flax_api == "nnx" else train).train_and_evaluate(config, workdir)


main = cli.make_main(train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
