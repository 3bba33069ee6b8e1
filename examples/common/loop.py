"""The epoch loop both examples run: progress, metrics.jsonl, TensorBoard, checkpoints."""

from __future__ import annotations

import logging as std_logging
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from flax_pc_examples.common import records

#: An epoch: ``run_epoch(state, epoch) -> (state, record)``, the record a
#: ``metrics.jsonl`` line (``'epoch'`` and floats; lists and dicts of floats).
RunEpoch = Callable[[Any, int], tuple[Any, dict[str, Any]]]

_EXAMPLES = str(pathlib.Path(__file__).parents[1])


class DivergedError(Exception):
    """Training produced a non-finite energy or loss."""


class _OwnInfoOnly(std_logging.Filter):
    """Keeps INFO lines of the examples only: orbax logs dozens per checkpoint."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_EXAMPLES)


def quiet_other_info_logs() -> None:
    """Drops other libraries' INFO lines from the absl log (once per process)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
        handler.addFilter(_OwnInfoOnly())


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
    state: Any,
    run_epoch: RunEpoch,
    *,
    workdir: pathlib.Path,
    checkpoints: ocp.CheckpointManager,
    writer: Any,
    history: list[dict[str, Any]],
    start_epoch: int,
    num_epochs: int,
    log_line: Callable[[dict[str, Any]], str],
    progress_fields: Callable[[dict[str, Any]], dict[str, str]],
    check: Callable[[dict[str, Any]], None],
) -> Any:
    """Runs epochs ``start_epoch + 1 .. num_epochs`` and records each.

    Per epoch: ``run_epoch``, ``check`` (raises on divergence), the
    ``metrics.jsonl`` line (appended to ``history`` too), a checkpoint,
    TensorBoard scalars, and a progress bar on a terminal or ``log_line``
    in a log. The checkpoints and the writer are closed at the end, also
    on an error.

    Returns:
      The final state.
    """
    if start_epoch < num_epochs:
        logging.info(
            "Training epochs %d..%d (the first one compiles).", start_epoch + 1, num_epochs
        )
    progress = None
    if sys.stderr.isatty() and start_epoch < num_epochs:
        from tqdm import tqdm

        progress = tqdm(total=num_epochs, initial=start_epoch, unit="epoch", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, num_epochs + 1):
            start = time.perf_counter()
            state, record = run_epoch(state, epoch)
            record.setdefault("seconds", time.perf_counter() - start)
            check(record)
            history.append(record)
            # The metrics line goes first: a run killed before its checkpoint is
            # complete redoes the epoch, and the resume drops the line again.
            records.append_metrics(workdir, record)
            checkpoints.save(epoch, args=ocp.args.StandardSave(state))
            if writer is not None:
                writer.write_scalars(epoch, scalars(record))
            if progress is not None:
                progress.set_postfix(progress_fields(record), refresh=False)
                progress.update()
            else:
                logging.info(log_line(record))
    finally:
        if progress is not None:
            progress.close()
        checkpoints.wait_until_finished()
        checkpoints.close()
        if writer is not None:
            writer.close()
    return state
