"""Makes TensorBoard forget the summaries of epochs that a resumed run trains again.

A run killed after an epoch's summaries but before its checkpoint completed,
or resumed from an older checkpoint than its newest, trains those epochs
again; without this TensorBoard would show each of them twice.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def restart_at(workdir: pathlib.Path, step: int) -> None:
    """TensorBoard drops what it read before now for steps ``>= step`` of ``workdir``'s run.

    At a ``SessionLog.START`` event of step ``s`` TensorBoard purges the events
    of steps ``>= s`` read before it; it reads event files in the order of their
    names (whose fifth part is the second they were made in) and takes the first
    START for the run's start, so two are written, in a file named to sort after
    the old files and before this run's.
    """
    prefix = "events.out.tfevents."
    names = [p.name[len(prefix) :].split(".")[0] for p in workdir.glob(prefix + "*")]
    stamp = max([int(time.time()) - 1, *(int(n) for n in names if n.isdigit())])
    log = event_pb2.SessionLog  # pyright: ignore[reportAttributeAccessIssue]
    restart = event_pb2.Event(  # pyright: ignore[reportAttributeAccessIssue]
        wall_time=time.time(), step=step, session_log=log(status=log.START)
    )
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        writer = EventFileWriter(folder)
        writer.add_event(restart)
        writer.add_event(restart)
        writer.close()
        (written,) = pathlib.Path(folder).iterdir()
        # "~" sorts after the host name that follows the second in other files.
        os.replace(written, workdir / f"{prefix}{stamp:010d}.~restart.{os.getpid()}")
    time.sleep(max(0.0, stamp + 1 - time.time()))  # this run's files: a later second
