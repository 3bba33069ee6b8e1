"""Trains a predictive-coding network on MNIST.

    python examples/mnist/main.py --config=configs/default.py --workdir=workdir/default

The logic lives in ``train.py``; the flags in ``examples.common.cli``.
"""

from absl import app

from examples.common import cli
from examples.mnist import train

main = cli.make_main(train.train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
