"""Temporal predictive coding: tracks a noisy dynamical system and memorises digit sequences.

    python examples/temporal/main.py --config=configs/tpc.py --workdir=workdir/tpc \
        --config.data_dir=../shared/datasets/mnist

The logic lives in ``train.py``; the flags in ``examples.common.cli``.
"""

from absl import app

from examples.common import cli
from examples.temporal import train

main = cli.make_main(train.train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
