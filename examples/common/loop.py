"""The epoch loop both examples run: progress, metrics.jsonl, TensorBoard, checkpoints."""

from __future__ import annotations

import contextlib
import functools
import logging as std_logging
import math
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

import flax_pc as fpc
from examples.common import devices, records

#: An epoch: ``run_epoch(state, epoch) -> (state, record)``, the record a
#: ``metrics.jsonl`` line (``'epoch'`` and floats; lists and dicts of floats).
RunEpoch = Callable[[Any, int], tuple[Any, dict[str, Any]]]
#: One epoch of training: ``train_epoch(state, inputs, targets, rng) -> (state, metrics)``.
TrainEpoch = Callable[[Any, Any, Any, jax.Array], tuple[Any, dict[str, Any]]]
_Result = TypeVar("_Result")

_EXAMPLES = str(pathlib.Path(__file__).parents[1])


class DivergedError(Exception):
    """Training produced a non-finite energy or loss."""


class StoppedError(Exception):
    """A stop signal (SIGTERM, Ctrl-C) ended the run; a rerun resumes it."""


class _Stop(BaseException):
    """Raised by the signal handler; a BaseException so no ``except Exception`` eats it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.name = signal.Signals(signum).name


class _StopSignals:
    """SIGTERM and SIGINT raise :class:`_Stop`, except inside :meth:`deferred`.

    Inside it (the metrics line and the start of a checkpoint's save) a
    signal is held and raised when the block ends, so a run never stops
    half-way through recording an epoch.
    """

    def __init__(self) -> None:
        self._deferring = False
        self._pending: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self._deferring:
            self._pending = signum
        else:
            raise _Stop(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._pending is not None:
                signum, self._pending = self._pending, None
                raise _Stop(signum)


class _OwnInfoOnly(std_logging.Filter):
    """Keeps INFO lines of the examples only: orbax logs dozens per checkpoint."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_EXAMPLES)


def quiet_other_info_logs() -> None:
    """Drops other libraries' INFO lines from the absl log (once per process)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
        handler.addFilter(_OwnInfoOnly())


def in_workdir(
    config: ml_collections.ConfigDict,
    workdir: str,
    validate: Callable[[ml_collections.ConfigDict], None],
    train: Callable[[ml_collections.ConfigDict, pathlib.Path], _Result],
) -> _Result:
    """``train(config, workdir)`` with ``config`` validated and ``workdir`` held.

    Drops other libraries' INFO lines from the log, calls ``validate(config)``
    (a bad field raises before ``workdir`` is touched), then holds
    ``workdir`` with :func:`records.exclusive` (process 0 only) while
    ``train`` runs.
    """
    quiet_other_info_logs()
    validate(config)
    workdir_path = pathlib.Path(workdir)
    with records.exclusive(workdir_path, enabled=devices.is_primary()):
        return train(config, workdir_path)


def jit_train_epoch(
    batch_size: int, batch_sharding: jax.sharding.Sharding | None = None
) -> TrainEpoch:
    """:func:`flax_pc.train_epoch`, jitted (donating the state), for one run's batches.

    Args:
      batch_size: examples per train step.
      batch_sharding: where each batch lives (split over the devices).
    """
    train_epoch = jax.jit(
        fpc.train_epoch,
        static_argnames=("batch_size", "shuffle", "batch_sharding"),
        donate_argnames=("state",),
    )
    return functools.partial(train_epoch, batch_size=batch_size, batch_sharding=batch_sharding)


def check_finite(record: dict[str, Any], others: dict[str, str], what: str, advice: str) -> None:
    """Raises :class:`DivergedError` unless ``train_energy`` and ``others`` are finite.

    Args:
      record: the epoch's record.
      others: ``{key: label}`` of the record's other values to check and name.
      what: what diverged (``'training'``).
      advice: which config fields to lower, and their values.
    """
    keys = ["train_energy", *others]
    if all(math.isfinite(record[k]) for k in keys):
        return
    epoch = record["epoch"]
    kept = (
        f"The last good checkpoint (epoch {epoch - 1}) is kept."
        if epoch > 1
        else "No checkpoint was saved."
    )
    details = ", ".join(f"{label} {record[k]}" for k, label in others.items())
    raise DivergedError(
        f"the energy became {record['train_energy']} in epoch {epoch} ({details}): {what} "
        f"diverged; {advice}. {kept}"
    )


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of an epoch: its floats, node energies, energy per step."""
    values = {k: v for k, v in record.items() if isinstance(v, float)}
    values.update({f"node_energy/{k}": v for k, v in record["node_energies"].items()})
    values.update({f"energy_at_step/{t}": v for t, v in enumerate(record["energy_per_step"])})
    return values


def train_epochs(
    resumed: records.Resumed,
    run_epoch: RunEpoch,
    *,
    log_line: Callable[[dict[str, Any]], str],
    progress_fields: Callable[[dict[str, Any]], dict[str, str]],
    check: Callable[[dict[str, Any]], None],
) -> Any:
    """Runs epochs ``start_epoch + 1 .. num_epochs`` and records each.

    Per epoch: ``run_epoch``, ``check`` (raises on divergence), the
    ``metrics.jsonl`` line (appended to ``history`` too), a checkpoint,
    TensorBoard scalars, and a progress bar on a terminal or, in a log,
    ``epoch <epoch>/<num_epochs>: <log_line>``. The checkpoints and the
    writer are closed at the end, also on an error; a checkpoint being
    written is completed first. In the processes other than 0 of a
    multi-process run only the checkpoints are written, and nothing is
    logged per epoch.

    Args:
      resumed: the state to train, the workdir's records and the last epoch
        to train, from :func:`records.resume` (``history`` gets each
        epoch's record, in process 0).
      run_epoch: ``run_epoch(state, epoch) -> (state, record)``.
      log_line: the log line of an epoch's record, after its ``epoch e/n:``.
      progress_fields: the progress bar's fields for an epoch's record.
      check: raises on a record that shows divergence.

    Returns:
      The final state.

    Raises:
      StoppedError: SIGTERM or Ctrl-C; the message says which epoch a rerun
        resumes from.
    """
    state, start_epoch, history, checkpoints, writer, workdir, num_epochs = resumed
    primary = devices.is_primary()
    if start_epoch < num_epochs and primary:
        logging.info(
            "Training epochs %d..%d (the first one compiles).", start_epoch + 1, num_epochs
        )
    progress = None
    if sys.stderr.isatty() and start_epoch < num_epochs and primary:
        from tqdm import tqdm

        progress = tqdm(total=num_epochs, initial=start_epoch, unit="epoch", dynamic_ncols=True)
    stop_signals = _StopSignals()
    epoch = start_epoch
    try:
        with stop_signals.installed():
            for epoch in range(start_epoch + 1, num_epochs + 1):
                start = time.perf_counter()
                state, record = run_epoch(state, epoch)
                record.setdefault("seconds", time.perf_counter() - start)
                check(record)
                with stop_signals.deferred():
                    # The metrics line goes first: a run killed before its checkpoint
                    # is complete redoes the epoch, and the resume drops the line.
                    if primary:
                        history.append(record)
                        records.append_metrics(workdir, record)
                    checkpoints.save(epoch, args=ocp.args.StandardSave(state))
                if writer is not None:
                    writer.write_scalars(epoch, scalars(record))
                if progress is not None:
                    progress.set_postfix(progress_fields(record), refresh=False)
                    progress.update()
                elif primary:
                    logging.info(f"epoch {epoch}/{num_epochs}: {log_line(record)}")
    except _Stop as stop:
        if progress is not None:
            progress.close()
            progress = None
        checkpoints.wait_until_finished()
        resume = checkpoints.latest_step() or 0
        raise StoppedError(
            f"stopped by {stop.name} in epoch {epoch}; "
            + (
                f"the checkpoint of epoch {resume} is complete: rerun the same command to "
                f"resume from epoch {resume}."
                if resume
                else "no epoch was completed: a rerun starts over."
            )
        ) from None
    finally:
        if progress is not None:
            progress.close()
        checkpoints.wait_until_finished()
        checkpoints.close()
        if writer is not None:
            writer.close()
    return state
