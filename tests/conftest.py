"""Shared set-up and fixtures of the flax_pc tests (markers and warnings: pyproject.toml).

Helpers that are plain functions (``assert_trees_close``, ...) are in ``helpers.py``.
"""

import atexit
import os
import shutil
import tempfile

# Set before anything imports jax, which reads them once.
# Tests compare against float32 references; keep XLA on the CPU deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
# The examples' tests build the same train steps many times (each run, resume and
# subprocess jits anew): a compilation cache shared by the session, its subprocesses
# included, compiles each program once (test_mnist_train + test_workdir: 230 s
# instead of 354). Cached executables are XLA's own, so results are unchanged.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="flax_pc_tests_jax_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402
from helpers import with_overrides  # noqa: E402


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
