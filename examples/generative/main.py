"""Trains a predictive-coding decoder (a generative model) on Fashion-MNIST.

    python examples/generative/main.py --config=configs/generative.py \
        --workdir=workdir/generative --config.data_dir=path/to/fashion_mnist

The logic lives in ``train.py``; the flags in ``examples.common.cli``.
"""

from absl import app

from examples.common import cli
from examples.generative import train

main = cli.make_main(train.train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
