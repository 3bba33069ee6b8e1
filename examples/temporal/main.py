"""Temporal predictive coding: tracks a noisy dynamical system and memorises digit sequences.

    python examples/temporal/main.py --config=configs/tpc.py --workdir=workdir/tpc \
        --config.data_dir=../shared/datasets/mnist

The logic lives in ``train.py``; the flags in ``examples/common/workdir.py``.
"""

from absl import app

from examples.common import workdir
from examples.temporal import train

if __name__ == "__main__":
    app.run(workdir.make_main(train.train_and_evaluate))
