"""What a run keeps in its workdir: config.json, metrics.jsonl, summaries, checkpoints."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from absl import logging

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


class WorkdirError(Exception):
    """The workdir cannot be used for this run (nothing in it was changed)."""


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
      WorkdirError: ``workdir`` is a file, or its ``config.json`` is unreadable
        or differs from ``config`` in one of ``fields``.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {str(workdir)!r} exists and is not a folder.")
    saved_file = workdir / CONFIG_FILE
    if not saved_file.exists():
        return
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
            raise WorkdirError(
                f"workdir {str(workdir)!r} holds a run with {field} = {theirs!r}, this config "
                f"has {ours!r}; use another --workdir to train this model."
            )


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


def create_writer(workdir: pathlib.Path, config: ml_collections.ConfigDict | None = None):
    """A TensorBoard writer for ``workdir`` (``None`` without tensorboard installed).

    Args:
      workdir: where the event files go.
      config: written as hyperparameters when given (at the start of a run).
    """
    try:
        from clu import metric_writers
    except ImportError as e:  # clu's TensorBoard writer needs the tensorboard package.
        logging.warning("No TensorBoard summaries (%s); pip install tensorboard.", e)
        return None
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


def open_checkpoints(workdir: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of ``workdir/checkpoints``, one step per epoch."""
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )


def restore_latest(checkpoints: ocp.CheckpointManager, state: Any) -> tuple[Any, int]:
    """The latest checkpoint's state and epoch, or ``(state, 0)`` when there is none.

    Args:
      checkpoints: the manager.
      state: a fresh train state: the structure, shapes and dtypes to restore.

    Raises:
      WorkdirError: the checkpoint does not fit ``state``.
    """
    epoch = checkpoints.latest_step() or 0
    if not epoch:
        return state, 0
    try:
        return checkpoints.restore(epoch, args=ocp.args.StandardRestore(state)), epoch
    except (ValueError, KeyError, TypeError) as e:
        checkpoints.close()
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise WorkdirError(
            f"the checkpoint of epoch {epoch} in {checkpoints.directory} does not fit this "
            f"config ({type(e).__name__}: {first_line}); use another --workdir."
        ) from None
