"""Shared fixtures and markers for the flax_pc tests."""

import os

# Tests compare against float32 references; keep XLA on the CPU deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (seconds to minutes); run in CI")
