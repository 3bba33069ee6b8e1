"""Associative memory: a generative PC network stores images and retrieves them from cues.

    python examples/memory/main.py --config=configs/memory.py --workdir=workdir/memory \
        --config.data_dir=../shared/datasets/mnist

The logic lives in ``train.py``; the flags in ``examples/common/workdir.py``.
"""

from absl import app

from examples.common import workdir
from examples.memory import train

if __name__ == "__main__":
    app.run(workdir.make_main(train.train_and_evaluate))
