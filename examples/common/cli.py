"""The command line both examples share: ``--config``, ``--workdir``, one-line errors.

python examples/<name>/main.py --config=configs/<config>.py --workdir=<folder>
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summaries and plots.")
config_flags.DEFINE_config_file(
    "config", None, "File path to the training hyperparameter configuration.", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def make_main(
    train_and_evaluate: Callable[[Any, str], Any],
    user_errors: tuple[type[BaseException], ...],
) -> Callable[[list[str]], None]:
    """The ``main(argv)`` for ``absl.app.run``: trains, or exits with ``Error: ...``.

    Args:
      train_and_evaluate: the example's ``train_and_evaluate(config, workdir)``.
      user_errors: the errors the user fixes (bad config, workdir, data, …):
        printed as one line, exit code 1; anything else is a bug (traceback).
    """

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError("Too many command-line arguments.")
        try:
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except user_errors as e:
            sys.exit(f"Error: {e}")

    return main
