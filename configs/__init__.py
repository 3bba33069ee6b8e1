"""The example configs (``ml_collections``), importable as ``flax_pc_examples.configs``."""
