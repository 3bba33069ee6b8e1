"""What a run keeps in its workdir: config.json, metrics.jsonl, summaries, checkpoints.

One run at a time: :func:`exclusive` holds an OS lock on the workdir for the
whole run (released by the OS when the process dies, so a ``kill -9`` never
leaves a stale lock). On resume, :func:`restore_latest` falls back from a
checkpoint that cannot be read to the newest one that can.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization, traverse_util
from jax.experimental import multihost_utils

#: Fields that decide the shapes (or the meaning) of a checkpoint's arrays:
#: a workdir trained with other values cannot be resumed.
MODEL_FIELDS = ("dataset", "model", "hidden_sizes", "conv_features", "activation", "optimizer")
#: The fields of :data:`MODEL_FIELDS` (and more) that only some models use.
PER_MODEL_FIELDS = {
    "hidden_sizes": ("mlp", "cnn"),
    "conv_features": ("cnn",),
    "resnet_stem_features": ("resnet",),
    "resnet_stage_features": ("resnet",),
    "resnet_blocks_per_stage": ("resnet",),
}
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
#: Written while a run holds the workdir: which process it is (for the message
#: a second run gets).
OWNER_FILE = "run.owner"
#: Where checkpoints that cannot be read are moved when an older one is used.
UNREADABLE_DIR = "unreadable_checkpoints"


class WorkdirError(Exception):
    """The workdir cannot be used for this run (nothing in it was changed)."""


@contextlib.contextmanager
def exclusive(workdir: pathlib.Path, *, enabled: bool = True) -> Iterator[None]:
    """Holds an exclusive lock on ``workdir`` (a folder, made if missing) for the block.

    The lock is ``flock`` on the folder itself: nothing is written to take
    it, and the OS drops it when the process ends, however it ends. A folder
    this made and left empty (the run stopped on bad input) is removed again.

    Args:
      workdir: the run's folder.
      enabled: ``False`` for the processes of a multi-process run other than
        process 0 (they share process 0's workdir).

    Raises:
      WorkdirError: another process holds the lock, or ``workdir`` is a file.
    """
    if not enabled:
        yield
        return
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {str(workdir)!r} exists and is not a folder.")
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    handle = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        owner = workdir / OWNER_FILE
        by = f" ({owner.read_text().strip()})" if owner.exists() else ""
        raise WorkdirError(
            f"workdir {str(workdir)!r} is in use by another run{by}; wait for it to end, or "
            "use another --workdir."
        ) from None
    try:
        yield
    finally:
        (workdir / OWNER_FILE).unlink(missing_ok=True)
        os.close(handle)  # releases the lock
        if created and not any(workdir.iterdir()):
            workdir.rmdir()


def claim(workdir: pathlib.Path) -> None:
    """Records this process as the workdir's owner (after :func:`exclusive` and the checks)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    (workdir / OWNER_FILE).write_text(
        f"process {os.getpid()} on {socket.gethostname()}, since {started}\n"
    )


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as in config.json


def check_workdir(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    fields: Sequence[str] | None = None,
) -> None:
    """Refuses a workdir whose run ``config`` cannot continue; reads, never writes.

    Args:
      config: the config of this run.
      workdir: the run's folder.
      fields: the fields that must equal the saved run's; default
        :data:`MODEL_FIELDS` and the ResNet's, those of :data:`PER_MODEL_FIELDS`
        only for the models that use them.

    Raises:
      WorkdirError: ``workdir``'s ``config.json`` is unreadable or differs from
        ``config`` in one of ``fields``.
    """
    difference = _differing_field(config, workdir, fields)
    if difference:
        raise WorkdirError(
            f"workdir {str(workdir)!r} holds a run with {difference}; use another --workdir "
            "to train this model."
        )


def check_init_checkpoint(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Refuses a ``config.init_checkpoint`` that holds no checkpoint of this model; reads only."""
    steps = workdir / "checkpoints"
    if not steps.is_dir() or not any(p.name.isdigit() for p in steps.iterdir()):
        raise WorkdirError(
            f"config.init_checkpoint = {str(workdir)!r} holds no checkpoint; it must be the "
            "workdir of a run of the same model (e.g. one with --config.algorithm=bp)."
        )
    difference = _differing_field(config, workdir, None)
    if difference:
        raise WorkdirError(
            f"config.init_checkpoint = {str(workdir)!r} holds a run with {difference}; it "
            "must be a run of the same model, data and optimizer."
        )


def _differing_field(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, fields: Sequence[str] | None
) -> str:
    """``"<field> = <saved>, this config has <ours>"`` for the first differing field, or ``''``."""
    saved_file = workdir / CONFIG_FILE
    if not saved_file.exists():
        return ""
    try:
        saved = json.loads(saved_file.read_text())
    except (OSError, ValueError) as e:
        raise WorkdirError(f"cannot read {saved_file} ({e}); use another --workdir.") from None
    current = _as_json(config)
    if fields is None:
        fields = [
            f
            for f in dict.fromkeys((*MODEL_FIELDS, *PER_MODEL_FIELDS))
            if current["model"] in PER_MODEL_FIELDS.get(f, (current["model"],))
        ]
    for field in fields:
        if saved.get(field) != current[field]:
            theirs, ours = (
                tuple(v) if isinstance(v, list) else v for v in (saved.get(field), current[field])
            )
            return f"{field} = {theirs!r}, this config has {ours!r}"
    return ""


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Writes ``config.json``."""
    (workdir / CONFIG_FILE).write_text(config.to_json(indent=2, sort_keys=True) + "\n")


def read_metrics(workdir: pathlib.Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of epochs ``1..up_to_epoch``.

    Lines of later epochs (written before a kill, whose checkpoint never
    completed) are left out.
    """
    path = workdir / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    return [r for r in history if r["epoch"] <= up_to_epoch]


def write_metrics(workdir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Replaces ``metrics.jsonl`` with ``history``, atomically."""
    path = workdir / METRICS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)


def append_metrics(workdir: pathlib.Path, record: dict[str, Any]) -> None:
    """Appends one epoch's line to ``metrics.jsonl``."""
    with (workdir / METRICS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")


def create_writer(workdir: pathlib.Path, config: ml_collections.ConfigDict, start_epoch: int):
    """A TensorBoard writer for ``workdir`` (``None`` without tensorboard installed).

    Args:
      workdir: where the event files go.
      config: written as hyperparameters at the start of a run.
      start_epoch: the epoch the run resumes from (0: a new run). TensorBoard
        is told to drop what earlier runs wrote for later epochs (a run
        killed after its summaries, or resumed from an older checkpoint).
    """
    try:
        from clu import metric_writers
    except ImportError as e:  # clu's TensorBoard writer needs the tensorboard package.
        logging.warning("No TensorBoard summaries (%s); pip install tensorboard.", e)
        return None
    if start_epoch:
        _purge_summaries_after(workdir, start_epoch)
        config = None
    # The log line per epoch says it all: TensorBoard only, off the main thread.
    writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))
    if config is not None:
        writer.write_hparams(
            {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in config.to_dict().items()
            }
        )
    return writer


def _purge_summaries_after(workdir: pathlib.Path, epoch: int) -> None:
    """Makes TensorBoard drop the summaries of epochs after ``epoch``.

    A ``SessionLog.START`` event at step ``s`` tells TensorBoard that a run
    restarted there: it discards the events with step ``>= s`` read before it.
    TensorBoard reads event files in the order of their names, whose fifth
    part is the second they were made in: the restart file is named to sort
    after every existing file and before the ones this run writes.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    prefix = "events.out.tfevents."
    stamps = [
        int(stamp)
        for path in workdir.glob(prefix + "*")
        if (stamp := path.name[len(prefix) :].split(".")[0]).isdigit()
    ]
    stamp = max([int(time.time()) - 1, *stamps])
    restart = event_pb2.Event(
        wall_time=time.time(),
        step=epoch + 1,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
    )
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        writer = EventFileWriter(folder)
        # TensorBoard takes the first START it sees for the start of the run,
        # not a restart: the second purges whether or not an earlier one exists.
        writer.add_event(restart)
        writer.add_event(restart)
        writer.close()
        (written,) = pathlib.Path(folder).iterdir()
        # "~" sorts after the host names that follow the second in other files.
        os.replace(written, workdir / f"{prefix}{stamp:010d}.~restart.{os.getpid()}")
    # This run's own event files must be named after a later second.
    time.sleep(max(0.0, stamp + 1 - time.time()))


def open_checkpoints(workdir: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of ``workdir/checkpoints``, one step per epoch.

    Orbax writes each checkpoint to a temporary folder and renames it when it
    is complete, so a checkpoint cut short never looks like one; the
    temporary folders of such checkpoints are removed here.
    """
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True
        ),
        # Named, so that item_metadata can read a checkpoint's shapes.
        item_handlers=ocp.StandardCheckpointHandler(),
    )


def restore_latest(
    checkpoints: ocp.CheckpointManager, state: Any, *, primary: bool = True
) -> tuple[Any, int]:
    """The newest readable checkpoint's state and epoch, or ``(state, 0)`` when there is none.

    A checkpoint that cannot be read (a full disk, a copy cut short) is
    skipped with a warning that names it and why, and the one before it is
    tried. When an older one is restored, the unreadable newer ones are moved
    to ``workdir/unreadable_checkpoints/`` (so that the run can write those
    epochs again); when none can be read, nothing is moved.

    Args:
      checkpoints: the manager.
      state: a fresh train state: the structure, shapes and dtypes to restore.
      primary: whether this process moves the unreadable checkpoints (process
        0 of a multi-process run; the others wait for it).

    Raises:
      WorkdirError: a checkpoint holds arrays of other shapes (another model),
        or no checkpoint can be read.
    """
    unreadable: list[tuple[int, str]] = []
    for epoch in sorted(checkpoints.all_steps(), reverse=True):
        try:
            restored = _restore(checkpoints, epoch, state)
        except _MisfitError as misfit:
            checkpoints.close()
            raise WorkdirError(
                f"the checkpoint of epoch {epoch} in {checkpoints.directory} does not fit this "
                f"config ({misfit}); use another --workdir."
            ) from None
        except _UnreadableError as unread:
            reason = str(unread)
            logging.warning(
                "The checkpoint of epoch %d (%s) cannot be read (%s); trying the one before.",
                epoch, pathlib.Path(checkpoints.directory) / str(epoch), reason,
            )  # fmt: skip
            unreadable.append((epoch, reason))
            continue
        if unreadable:
            if primary:
                _set_aside(checkpoints, [e for e, _ in unreadable])
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("examples: checkpoints set aside")
            checkpoints.reload()
            logging.warning(
                "Resuming from the checkpoint of epoch %d; the unreadable ones were moved to %s.",
                epoch, pathlib.Path(checkpoints.directory).parent / UNREADABLE_DIR,
            )  # fmt: skip
        return restored, epoch
    if unreadable:
        checkpoints.close()
        listed = "; ".join(f"epoch {e}: {reason}" for e, reason in unreadable)
        raise WorkdirError(
            f"no checkpoint in {checkpoints.directory} can be read ({listed}). Use another "
            "--workdir, or move checkpoints/ away to start this one over."
        )
    return state, 0


class _MisfitError(Exception):
    """A checkpoint holds arrays of other shapes than the state's; the message says which."""


class _UnreadableError(Exception):
    """A checkpoint cannot be read; the message is the error's type and first line."""


def _restore(checkpoints: ocp.CheckpointManager, epoch: int, state: Any) -> Any:
    """The checkpoint of ``epoch``, restored into ``state``'s structure, shapes and dtypes.

    Raises:
      _MisfitError: the checkpoint's params or model state have other shapes (another model).
      _UnreadableError: the checkpoint cannot be read (a full disk, a copy cut short).
    """
    mismatch = _shape_mismatch(checkpoints, epoch, state)
    if mismatch:
        raise _MisfitError(mismatch)
    try:
        return checkpoints.restore(epoch, args=ocp.args.StandardRestore(state))
    except Exception as e:  # a broken file fails in many ways
        raise _UnreadableError(_reason(e)) from None


def _reason(error: Exception) -> str:
    """``'JSONDecodeError: Expecting value ...'``: an error's type and first line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _shape_mismatch(checkpoints: ocp.CheckpointManager, epoch: int, state: Any) -> str:
    """Which array of the saved params/model state has another shape than ``state``'s.

    ``''`` when they fit, or when the checkpoint's metadata cannot be read
    (then restoring it fails, and it counts as unreadable).
    """
    try:
        saved = checkpoints.item_metadata(epoch)
        saved = {k: dict(saved[k]) for k in ("params", "model_state") if k in saved}
        saved = traverse_util.flatten_dict(saved, sep="/")
    except Exception:  # unreadable metadata: not a mismatch
        return ""
    target = serialization.to_state_dict(state)
    target = {k: target[k] for k in ("params", "model_state") if k in target}
    target = traverse_util.flatten_dict(target, sep="/")
    for path in sorted(set(saved) | set(target)):
        if path not in target:
            return f"it has {path}, this config's model has not"
        if path not in saved:
            return f"this config's model has {path}, it has not"
        theirs = tuple(getattr(saved[path], "shape", ()))
        ours = tuple(getattr(target[path], "shape", ()))
        if theirs != ours:
            return f"{path} has shape {theirs} there, {ours} in this config's model"
    return ""


def _set_aside(checkpoints: ocp.CheckpointManager, epochs: list[int]) -> None:
    directory = pathlib.Path(checkpoints.directory)
    aside = directory.parent / UNREADABLE_DIR
    aside.mkdir(exist_ok=True)
    for epoch in epochs:
        target = aside / str(epoch)
        suffix = 1
        while target.exists():
            target, suffix = aside / f"{epoch}.{suffix}", suffix + 1
        os.replace(directory / str(epoch), target)


class Resumed(NamedTuple):
    """What :func:`resume` hands the epoch loop."""

    state: Any
    start_epoch: int
    history: list[dict[str, Any]]
    checkpoints: ocp.CheckpointManager
    writer: Any
    #: The run's folder.
    workdir: pathlib.Path
    #: The epoch the run trains up to.
    num_epochs: int


def resume(
    workdir: pathlib.Path,
    config: ml_collections.ConfigDict,
    state: Any,
    *,
    num_epochs: int,
    primary: bool = True,
) -> Resumed:
    """Takes over ``workdir`` (inside :func:`exclusive`, after every check) and resumes.

    Records this process as the owner, restores the newest readable
    checkpoint, cuts ``metrics.jsonl`` (and the TensorBoard summaries) back
    to its epoch, and writes ``config.json``.

    Args:
      workdir: the run's folder.
      config: the run's config (``checkpoints_to_keep`` is read from it).
      state: a fresh train state (what to restore into).
      num_epochs: the epochs this run trains up to (for the log line and the loop).
      primary: ``False`` in the processes of a multi-process run but process 0:
        they restore the checkpoint (all processes read and write
        checkpoints) but leave the records to process 0 (no history, no writer).
    """
    if primary:
        claim(workdir)
    checkpoints = open_checkpoints(workdir, config.checkpoints_to_keep)
    state, start_epoch = restore_latest(checkpoints, state, primary=primary)
    if start_epoch:
        logging.info("Resuming from epoch %d of %d.", start_epoch, num_epochs)
    if not primary:
        return Resumed(state, start_epoch, [], checkpoints, None, workdir, num_epochs)
    history = read_metrics(workdir, up_to_epoch=start_epoch)
    write_metrics(workdir, history)
    write_config(workdir, config)
    writer = create_writer(workdir, config, start_epoch)
    return Resumed(state, start_epoch, history, checkpoints, writer, workdir, num_epochs)


def load_trained(workdir: pathlib.Path, state: Any) -> tuple[Any, int]:
    """``state`` with the params and model state of ``workdir``'s newest checkpoint.

    For a run that starts from another run's weights (``config.init_checkpoint``):
    the optimizer state and the step stay ``state``'s (fresh). ``workdir`` is
    only read.

    Returns:
      ``(state, epoch)``: the new state and the epoch of the checkpoint used.

    Raises:
      WorkdirError: the checkpoint does not fit ``state`` or cannot be read.
    """
    manager = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers=ocp.StandardCheckpointHandler(),
    )
    try:
        epoch = manager.latest_step()
        if epoch is None:
            raise WorkdirError(f"config.init_checkpoint = {str(workdir)!r} holds no checkpoint.")
        try:
            restored = _restore(manager, epoch, state)
        except _MisfitError as misfit:
            raise WorkdirError(
                f"config.init_checkpoint: the checkpoint of epoch {epoch} in {str(workdir)!r} "
                f"does not fit this config ({misfit})."
            ) from None
        except _UnreadableError as unread:
            raise WorkdirError(
                f"config.init_checkpoint: cannot read the checkpoint of epoch {epoch} in "
                f"{str(workdir)!r} ({unread})."
            ) from None
    finally:
        manager.close()
    return state.replace(params=restored.params, model_state=restored.model_state), epoch
