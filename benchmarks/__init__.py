"""The benchmarks, importable as ``flax_pc_benchmarks``."""
