"""Orbax checkpoints of any train-state pytree, checked against the state they restore into.

Orbax writes each checkpoint to a temporary folder and renames it when it is
complete, so a checkpoint cut short never looks like one. What it does not do,
and this module adds for :mod:`examples.common.workdir`: tell a checkpoint of
another model (arrays of other names or shapes, named here) from one that
cannot be read (a broken file), and restore a few parts of a checkpoint only.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

#: Where checkpoints that cannot be read are moved when an older one is used.
UNREADABLE_DIR = "unreadable_checkpoints"

State = TypeVar("State")


class MisfitError(Exception):
    """A checkpoint holds other arrays than the state; the message names the first."""


class UnreadableError(Exception):
    """A checkpoint cannot be read; the message is the error's type and first line."""


def saved_steps(folder: pathlib.Path) -> list[int]:
    """The steps of the complete checkpoints in ``folder`` (read only; none if it is missing)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def open_manager(folder: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of ``folder``, one step per epoch, keeping the last ``keep``.

    The temporary folders of checkpoints cut short are removed.
    """
    return ocp.CheckpointManager(
        folder.absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True
        ),
        # Named, so that item_metadata can read a checkpoint's shapes.
        item_handlers=ocp.StandardCheckpointHandler(),
    )


def restore(checkpoints: ocp.CheckpointManager, step: int, state: State) -> State:
    """The checkpoint of ``step``, restored into ``state``'s structure, shapes and shardings.

    Raises:
      MisfitError: the checkpoint's arrays have other paths or shapes than ``state``'s.
      UnreadableError: the checkpoint cannot be read.
    """
    _check_fit(checkpoints, step, state)
    try:
        return cast(State, checkpoints.restore(step, args=ocp.args.StandardRestore(state)))
    except Exception as e:  # a broken file fails in many ways
        raise UnreadableError(_reason(e)) from None


def restore_parts(folder: pathlib.Path, like: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The top-level entries ``like`` names of the newest checkpoint in ``folder`` (read only).

    Returns:
      ``(parts, step)``.

    Raises:
      MisfitError, UnreadableError: as :func:`restore`.
    """
    checkpoints = ocp.CheckpointManager(
        folder.absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers=ocp.PyTreeCheckpointHandler(),
    )
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise UnreadableError("no complete checkpoint")
        _check_fit(checkpoints, step, like)
        args = ocp.args.PyTreeRestore(
            item=like,
            restore_args=ocp.checkpoint_utils.construct_restore_args(like),
            partial_restore=True,
        )
        try:
            return dict(checkpoints.restore(step, args=args)), step
        except Exception as e:  # a broken file fails in many ways
            raise UnreadableError(_reason(e)) from None
    finally:
        checkpoints.close()


def set_aside(checkpoints: ocp.CheckpointManager, steps: list[int], *, primary: bool) -> None:
    """Moves the checkpoints of ``steps`` to ``../unreadable_checkpoints/`` (process 0).

    The other processes of a run wait for process 0; then every manager
    forgets the moved steps.
    """
    directory = pathlib.Path(checkpoints.directory)
    if primary:
        aside = directory.parent / UNREADABLE_DIR
        aside.mkdir(exist_ok=True)
        for step in steps:
            target, suffix = aside / str(step), 1
            while target.exists():
                target, suffix = aside / f"{step}.{suffix}", suffix + 1
            os.replace(directory / str(step), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("examples: checkpoints set aside")
    checkpoints.reload()


def _reason(error: Exception) -> str:
    """``'JSONDecodeError: Expecting value ...'``: an error's type and first line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _check_fit(checkpoints: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Raises :class:`MisfitError` unless the checkpoint holds ``state``'s arrays.

    Compares the paths and shapes of the arrays (``params/Dense_0/kernel``,
    ``opt_state/0/mu/...``); of the checkpoint's top-level entries, only
    those ``state`` has (a dict of some entries restores those). Nothing is
    raised when the checkpoint's metadata cannot be read: then restoring it
    fails, and it counts as unreadable.
    """
    try:
        saved = _shapes(checkpoints.item_metadata(step))
    except Exception:  # unreadable metadata: not a misfit
        return
    ours = _shapes(state)
    if isinstance(state, dict):
        saved = {path: shape for path, shape in saved.items() if path.split("/")[0] in state}
    for path in [*ours, *(p for p in saved if p not in ours)]:
        if path not in saved:
            raise MisfitError(f"this config's state has {path}, the checkpoint has not")
        if path not in ours:
            raise MisfitError(f"the checkpoint has {path}, this config's state has not")
        if saved[path] != ours[path]:
            raise MisfitError(
                f"{path} has shape {saved[path]} there, {ours[path]} in this config's state"
            )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{'params/Dense_0/kernel': (784, 128), ...}``: each array leaf's path and shape.

    A PRNG key array (an NNX model's RNG stream) has the shape orbax saves, its key data's.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(_key_name(k) for k in path): tuple(getattr(_key_data(leaf), "shape", ()))
        for path, leaf in leaves
    }


def _key_data(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return jax.random.key_data(leaf)
    return leaf


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)
