"""``config.init_checkpoint``: a new run starts from the weights of another run's workdir."""

from __future__ import annotations

import pathlib
from collections.abc import MutableMapping, Sequence
from typing import Any

import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from examples.common.workdir import WorkdirError, misfit, saved_epochs, to_host


def start_from(workdir: str, state: Any, weights: Sequence[str], evaluate: Any) -> Any:
    """``state`` with the entries ``weights`` (``'params'``, ...) of ``workdir``'s newest
    checkpoint; its optimizer state and step stay fresh. Logs ``evaluate(state)``'s
    ``test_accuracy`` when given.

    Raises:
      WorkdirError: no checkpoint there, or one of another network or unreadable.
    """
    where, folder = f"config.init_checkpoint = {workdir!r}", pathlib.Path(workdir) / "checkpoints"
    if not saved_epochs(folder):
        raise WorkdirError(
            f"{where} holds no checkpoint; it must be the workdir of a run of the same "
            "network (e.g. one with --config.algorithm=bp)."
        )
    # A field of a train state, or a key of a mapping (fpc.nnx's state).
    mapping = isinstance(state, MutableMapping)
    like = {n: state[n] if mapping else getattr(state, n) for n in weights}
    args = ocp.args.PyTreeRestore(
        like, ocp.checkpoint_utils.construct_restore_args(like), partial_restore=True
    )
    epoch = max(saved_epochs(folder))
    # A plain checkpointer, read only: a manager's background machinery is not needed here.
    # "default": the one item that Workdir's CheckpointManager saves per epoch.
    checkpointer, path = ocp.PyTreeCheckpointer(), folder.absolute() / str(epoch) / "default"
    # Shapes are compared before restoring: a restore that fails leaves tensorstore
    # callbacks behind that later hit a closed event loop.
    try:
        saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path)).tree
        saved = {n: saved[n] for n in weights if n in saved}
    except Exception:  # unreadable metadata: the restore below reports it
        saved = {}
    differs = misfit(saved, like) if saved else ""
    if differs:
        raise WorkdirError(f"{where}: its newest checkpoint does not fit this config ({differs}).")
    try:
        parts = dict(checkpointer.restore(path, args=args))
    except Exception as e:  # a broken file
        raise WorkdirError(
            f"{where}: its newest checkpoint cannot be read "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0]})."
        ) from None
    if mapping:
        state.update(parts)
    else:
        state = state.replace(**parts)
    start = f"Starting from the weights of {workdir} (epoch {epoch})"
    if evaluate is not None:
        accuracy = to_host(evaluate(state))["test_accuracy"]
        start += f": test accuracy {100 * accuracy:.2f}% before training"
    logging.info(start + ".")
    return state
