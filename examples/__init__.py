"""The training examples; importable as ``examples`` from an editable checkout."""
