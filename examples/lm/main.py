"""Trains a character-level Transformer language model by predictive coding.

    python examples/lm/main.py --config=configs/lm.py --workdir=workdir/lm \
        --config.data_dir=../shared/datasets/tinyshakespeare

The logic lives in ``train.py``; the flags in ``examples/common/workdir.py``.
"""

from absl import app

from examples.common import workdir as workdir_lib
from examples.lm import train

main = workdir_lib.make_main(train.train_and_evaluate)

if __name__ == "__main__":
    app.run(main)
