"""Shared set-up and fixtures of the flax_pc tests (markers and warnings: pyproject.toml).

Helpers that are plain functions (``assert_trees_close``, ...) are in ``helpers.py``.
"""

import os
import shutil

import pytest
from helpers import with_overrides

# Tests compare against float32 references; keep XLA on the CPU deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")


@pytest.fixture
def mnist_config():
    """configs/test.py (examples/mnist, tiny and synthetic) with overrides.

    ``mnist_config(batch_size=32)`` sets fields as ``--config.batch_size=32`` does.
    """
    from configs import test

    return lambda **overrides: with_overrides(test.get_config(), overrides)


@pytest.fixture
def generative_config():
    """configs/generative_test.py (examples/generative, tiny and synthetic) with overrides."""
    from configs import generative_test

    return lambda **overrides: with_overrides(generative_test.get_config(), overrides)


@pytest.fixture
def finished_copy(finished, tmp_path):
    """A copy of the workdir of the test module's ``finished`` run, for a test to change.

    Needs ``finished``, a fixture of the test module: ``(workdir, returncode,
    stderr)`` of a complete run of an example.
    """
    copy = tmp_path / "workdir"
    shutil.copytree(finished[0], copy)
    return copy
