"""A character-level language model (a decoder-only Transformer) trained by predictive coding."""
