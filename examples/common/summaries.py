"""TensorBoard summaries of a run (clu's writer), told to forget epochs a resume redoes."""

from __future__ import annotations

import os
import pathlib
import tempfile
import time
from typing import Any

import ml_collections
from absl import logging


def create_writer(workdir: pathlib.Path, config: ml_collections.ConfigDict, start_epoch: int):
    """A TensorBoard writer for ``workdir`` (``None`` without TensorFlow and TensorBoard).

    Args:
      workdir: where the event files go.
      config: written as hyperparameters at the start of a run.
      start_epoch: the epoch the run resumes from (0: a new run). TensorBoard
        is told to drop what earlier runs wrote for later epochs (a run
        killed after its summaries, or resumed from an older checkpoint).
    """
    try:
        from clu import metric_writers
    except ImportError as e:  # clu's summary writer is tf.summary
        logging.warning("No TensorBoard summaries (%s); pip install tensorflow-cpu tensorboard.", e)
        return None
    if start_epoch:
        _purge_summaries_after(workdir, start_epoch)
    # Not create_default_writer: its LoggingWriter would log every scalar of
    # every epoch again, after the example's own line. Off the main thread.
    writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))
    if not start_epoch:
        writer.write_hparams(
            {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in config.to_dict().items()
            }
        )
    return writer


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """An epoch's record as TensorBoard scalars: its floats, ``<key>/<entry>`` for the rest.

    ``{'train_loss': 0.1, 'energy_per_step': [2.0, 1.0], 'node_energies':
    {'PCNode_0': 0.5}}`` gives ``train_loss``, ``energy_per_step/0``,
    ``energy_per_step/1`` and ``node_energies/PCNode_0``.
    """
    values: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, float):
            values[key] = value
        elif isinstance(value, (list, dict)):
            entries = value.items() if isinstance(value, dict) else enumerate(value)
            values.update({f"{key}/{k}": v for k, v in entries if isinstance(v, float)})
    return values


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
    # Generated protobuf classes, which type checkers cannot see.
    event, session_log = event_pb2.Event, event_pb2.SessionLog  # pyright: ignore[reportAttributeAccessIssue]
    restart = event(
        wall_time=time.time(),
        step=epoch + 1,
        session_log=session_log(status=session_log.START),
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
