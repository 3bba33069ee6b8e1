"""The examples of flax_pc, installed as the package ``flax_pc_examples``."""
