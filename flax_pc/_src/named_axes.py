"""Training under a named device axis (``jax.pmap``, ``jax.shard_map``): whole-batch steps.

With ``PCTrainState.create(..., axis_name='batch')`` each device holds a share
of the batch, its own nodes (per example: inference needs no communication)
and a copy of the params. The weight step must be the same on every device
and equal to one device's step on the whole batch: the gradient of the
energy summed over the whole batch, i.e. the sum over devices of each
device's gradient (flax_pc's batch-sum convention). The metrics are reduced
the same way (sums over devices, divided by the whole batch's size).

Under ``jax.shard_map`` (with its default ``check_vma=True``) JAX itself
sums over the devices the gradient with respect to a value that is the same
on every device (the params): taking that gradient and summing it again
would count every device twice. So the params are first marked as varying
over the axis (``jax.lax.pcast``), which makes the gradient each device's
own, under ``pmap`` and ``shard_map`` alike; then it is summed once.
"""

from __future__ import annotations

import jax
from jax.extend import core as jax_core

from flax_pc._src import user_warnings
from flax_pc._src.types import PyTree


def check_axis_name(axis_name: object) -> str | None:
    """``axis_name`` if it is ``None`` or a non-empty string; raises otherwise."""
    if axis_name is None or (isinstance(axis_name, str) and axis_name):
        return axis_name
    raise TypeError(
        f"axis_name must be None or the name of the device axis of jax.pmap / jax.shard_map "
        f"(a string, e.g. 'batch'), got {axis_name!r}."
    )


def bound_axis_names() -> tuple[str, ...]:
    """The named axes the current trace runs under (``jax.pmap``, ``shard_map``, ``vmap``).

    JAX shows them through ``jax.extend`` alone, under a name that warns it
    may change; where it is gone this sees none (tests/test_named_axes.py
    checks that it still sees them).
    """
    names = getattr(jax_core, "unsafe_get_axis_names_DO_NOT_USE", lambda: ())
    return tuple(str(name) for name in names())


def warn_if_unnamed(axis_name: str | None) -> None:
    """Warns when the step is traced under a named axis that the state does not name.

    Under ``jax.pmap`` or ``shard_map`` with a state whose ``axis_name`` is
    ``None``, every device takes a weight step on its own share of the batch
    and the replicas drift apart, silently. The warning is given while JAX
    traces the step, so once per compilation.
    """
    if axis_name is not None:
        return
    names = bound_axis_names()
    if not names:
        return
    named = [name for name in names if not name.startswith("_")]
    if named:
        where = f"under the named axis {named[0]!r} (jax.pmap or jax.shard_map)"
        fix = f"PCTrainState.create(..., axis_name={named[0]!r})"
    else:  # jax.pmap without an axis_name binds an internal name
        where = "under jax.pmap without an axis_name"
        fix = "jax.pmap(..., axis_name='batch') and PCTrainState.create(..., axis_name='batch')"
    user_warnings.warn(
        f"train_step is traced {where} but the state names no axis_name: each device would "
        "take a weight step on its own share of the batch and the replicas would drift "
        f"apart. Pass {fix}. (Replicas meant to train apart, e.g. an ensemble under "
        "jax.vmap, can ignore this warning.)"
    )


def own_share(tree: PyTree, axis_name: str | None) -> PyTree:
    """``tree`` (the params) marked as varying over ``axis_name``, where JAX tracks it.

    A gradient with respect to the result is then each device's own, not
    already summed over the devices.
    """
    if axis_name is None:
        return tree

    def mark(leaf):
        try:
            return jax.lax.pcast(leaf, axis_name, to="varying")
        except ValueError:
            # Already varying, or a transform that does not track it (jax.vmap
            # with an axis_name): the gradient is each device's own already.
            return leaf

    return jax.tree_util.tree_map(mark, tree)


def total(tree: PyTree, axis_name: str | None) -> PyTree:
    """``tree`` summed over the devices of ``axis_name`` (itself for ``None``)."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)
