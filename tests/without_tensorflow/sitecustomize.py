"""Runs a Python process as in an install without TensorFlow (the ``test`` extra alone).

tests/conftest.py puts this folder first on ``PYTHONPATH`` for the processes that a
test not marked ``tensorflow`` starts (an example run, say): Python imports this
module at start-up, and importing any of ``PACKAGES`` then raises
ModuleNotFoundError, as where they are not installed.
"""

import sys

#: What the ``examples`` extra installs for TensorFlow (tensorflow-cpu brings Keras).
PACKAGES = ("tensorflow", "tensorboard", "tensorflow_datasets", "clu", "keras")

for _name in PACKAGES:
    sys.modules.setdefault(_name, None)  # pyright: ignore[reportArgumentType]
