"""The implementation of flax_pc. Not API: import the public names from ``flax_pc``."""
