"""Trains a predictive-coding decoder (a generative model) on Fashion-MNIST.

    python examples/generative/main.py --config=configs/generative.py \
        --workdir=workdir/generative --config.data_dir=path/to/fashion_mnist

The logic lives in ``train.py``; this file only parses the flags.
"""

import sys

import train
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
config_flags.DEFINE_config_file(
    "config", None, "File path to the training hyperparameter configuration.", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except train.USER_ERRORS as e:
        sys.exit(f"Error: {e}")


if __name__ == "__main__":
    app.run(main)
