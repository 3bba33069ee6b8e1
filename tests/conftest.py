"""Shared set-up of the flax_pc tests (markers and warnings: pyproject.toml)."""

import os

# Tests compare against float32 references; keep XLA on the CPU deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
