"""Trains a predictive-coding decoder (a generative model) on Fashion-MNIST.

    python examples/generative/main.py --config=configs/generative.py \
        --workdir=workdir/generative --config.data_dir=path/to/fashion_mnist

The logic lives in ``train.py``; the flags in ``examples/common/workdir.py``.
"""

from absl import app

from examples.common import workdir
from examples.generative import train

if __name__ == "__main__":
    app.run(workdir.make_main(train.train_and_evaluate))
