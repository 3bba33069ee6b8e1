"""Batches as pytrees: ``inputs`` and ``targets`` may be any nest of arrays.

A batch is a pytree (an array, a tuple ``(tokens, lengths)``, a dict) whose
arrays all share a leading batch axis ``B``; the model receives ``inputs`` as
its one argument, and ``output_energy`` receives ``targets`` as they are.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_pc._src.types import PyTree


def as_arrays(tree: PyTree) -> PyTree:
    """Every leaf of ``tree`` as a JAX array (NumPy arrays and Python numbers too)."""
    return jax.tree_util.tree_map(jnp.asarray, tree)


def leading_sizes(tree: PyTree) -> dict[str, int | None]:
    """``{key path: leading axis}`` of every leaf (``None`` for a scalar)."""
    sizes: dict[str, int | None] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        sizes[jax.tree_util.keystr(path)] = shape[0] if shape else None
    return sizes


def batch_size(tree: PyTree, name: str) -> int:
    """The leading (batch) axis that every array of ``tree`` shares; raises otherwise.

    Args:
      tree: a batch (``inputs`` or ``targets``): arrays ``[B, ...]``.
      name: what ``tree`` is, for the error message.
    """
    sizes = leading_sizes(tree)
    if not sizes:
        raise ValueError(f"{name} hold no arrays; a batch is arrays with a leading batch axis.")
    scalars = [path for path, size in sizes.items() if size is None]
    if scalars:
        raise ValueError(
            f"{name}{scalars[0]} is a scalar; every array of {name} needs a leading batch axis "
            "(the examples of the batch)."
        )
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}{path}: {size}" for path, size in sizes.items())
        raise ValueError(
            f"The arrays of {name} must share their leading (batch) axis, but their leading "
            f"sizes differ ({listed}). Put the batch first in every array."
        )
    return next(iter(sizes.values()))  # type: ignore[return-value]


def check_batch(inputs: PyTree, targets: PyTree) -> int:
    """The batch size ``B`` of ``inputs`` and ``targets``; raises unless they agree."""
    size = batch_size(inputs, "inputs")
    target_size = batch_size(targets, "targets")
    if target_size != size:
        raise ValueError(
            f"inputs hold {size} examples (leading axis) but targets hold {target_size}; "
            "each example needs its target."
        )
    return size


def describe(tree: Any) -> str:
    """``'tuple of 2 arrays'``: what kind of pytree ``tree`` is, for error messages."""
    leaves = jax.tree_util.tree_leaves(tree)
    return f"{type(tree).__name__} of {len(leaves)} array{'s' if len(leaves) != 1 else ''}"
