"""A run's workdir and the epoch loop that fills it: the operations both examples share.

``train.py`` holds the workdir for the run and hands it the train state and
one epoch of its own (any state pytree; ``run_epoch(state, epoch) -> (state,
metrics)``)::

    validate_config(config)
    with workdir.Workdir(path, config, model_fields=model_fields(config)) as run:
        ...                                       # load the data
        with workdir.config_errors():             # the library checks its arguments here
            state = create_train_state(config, rng)
        state = run.resume(state, weights=...)    # the newest readable checkpoint, if any
        state = run.train(state, run_epoch, log_line=..., learning_rates=...)
        ...                                       # plot run.history

What the workdir holds: ``config.json``, ``metrics.jsonl`` (one line per
epoch), TensorBoard summaries, ``checkpoints/<epoch>/`` (orbax, the last
``config.checkpoints_to_keep``), and whatever the example draws (``run.path``).

- One run at a time: an OS lock (``flock``) on the folder, which the OS drops
  when the process ends however it ends; a second run stops at once.
- A workdir holds one model: a resume whose config differs from the saved
  ``config.json`` in one of ``model_fields`` stops before anything is written,
  naming the field and both values (``config.init_checkpoint`` starts a new
  run from another run's weights instead: ``resume``'s ``weights``).
- A checkpoint that cannot be read is skipped: the run resumes from the newest
  one that can (the unreadable ones are moved to ``unreadable_checkpoints/``);
  one of other arrays (another model) stops the run, naming the array.
- ``metrics.jsonl`` and the TensorBoard summaries are cut back to the restored
  epoch, so that a resumed run shows each epoch once.
- SIGTERM and Ctrl-C end the run cleanly after the checkpoint being written
  (:class:`StoppedError` says where a rerun resumes); in a run of several
  processes, SIGTERM is JAX's preemption notice and orbax's
  ``reached_preemption`` stops every process after the same epoch.
- Several processes (``jax.distributed``): all write the checkpoints, process
  0 alone the other records and the log lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging as std_logging
import math
import os
import pathlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from examples.common import checkpoints as checkpoints_lib
from examples.common import summaries
from examples.common.config_checks import ConfigError

__all__ = [
    "DivergedError",
    "StoppedError",
    "Workdir",
    "WorkdirError",
    "config_errors",
    "describe_devices",
    "fields_read",
    "is_primary",
    "load_init_checkpoint",
    "to_host",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
#: Written while a run holds the workdir: which process it is (for the message
#: a second run gets).
OWNER_FILE = "run.owner"
UNREADABLE_DIR = checkpoints_lib.UNREADABLE_DIR

State = TypeVar("State")
#: One epoch: ``run_epoch(state, epoch) -> (state, metrics)``; the metrics are
#: arrays (on the devices or not): scalars, vectors, and dicts of them.
RunEpoch = Callable[[State, int], tuple[State, Mapping[str, Any]]]

_EXAMPLES = str(pathlib.Path(__file__).parents[1])


class WorkdirError(Exception):
    """The workdir cannot be used for this run (nothing in it was changed)."""


class DivergedError(Exception):
    """Training produced a non-finite energy, loss or metric."""


class StoppedError(Exception):
    """A stop signal (SIGTERM, Ctrl-C) ended the run; a rerun resumes it."""


def is_primary() -> bool:
    """Whether this process writes the run's records and log lines (process 0)."""
    return jax.process_index() == 0


def describe_devices(num_devices: int) -> str:
    """``'1 device'``, ``'4 devices'``, ``'4 devices in 2 processes'``."""
    text = f"{num_devices} device{'s' if num_devices != 1 else ''}"
    if jax.process_count() > 1:
        text += f" in {jax.process_count()} processes"
    return text


def to_host(tree: Any) -> Any:
    """NumPy copies of ``tree``'s arrays; replicated arrays of a multi-process run too.

    ``jax.device_get`` needs arrays whose every shard this process holds; a
    replicated array of several processes is read from this process's copy.
    """

    def get(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return jax.device_get(leaf)

    return jax.tree_util.tree_map(get, tree)


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Turns a ``ValueError`` or ``TypeError`` of the block into a :class:`ConfigError`.

    For the block that builds the train state from the config: flax_pc checks
    its own arguments there (``algorithm``, ``inference_steps``,
    ``tolerance``, ``nudging``, ``value_init``, ``latent``, ...), which the
    config passes under the library's names (``inference_steps`` as the
    ``steps`` of ``fpc.Inference``); the command line prints the
    error as one line ``Error: ...``. Errors raised later, in training, stay
    what they are (a bug shows its traceback).
    """
    try:
        yield
    except (ValueError, TypeError) as e:
        lines = str(e).splitlines()
        raise ConfigError(lines[0] if lines else type(e).__name__) from e


class _Reads:
    """A view of a config that records the fields read through it (``c.x`` or ``c['x']``)."""

    def __init__(self, config: ml_collections.ConfigDict):
        self._config = config
        self.fields: dict[str, None] = {}  # in the order first read

    def __getattr__(self, name: str) -> Any:
        if name not in self._config:
            raise AttributeError(f"fields_read: the config has no field {name!r}.")
        self.fields[name] = None
        return self._config[name]

    __getitem__ = __getattr__


def fields_read(build: Callable[[Any], Any], config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The fields of ``config`` that ``build(config)`` reads, in the order it reads them.

    Found by calling ``build`` on a view of ``config`` that records each field
    read, so the list follows ``build`` (a model's builder) as it changes.
    """
    reads = _Reads(config)
    build(reads)
    return tuple(reads.fields)


class Workdir:
    """A run's workdir, held for the run (a context manager): the lock, records and loop.

    Reads ``config.num_epochs`` (the epoch the run trains up to) and
    ``config.checkpoints_to_keep``, and writes the whole config to
    ``config.json``.

    Args:
      path: the run's folder (made if missing).
      config: the run's config.
      model_fields: the fields of ``config`` that define the run's model: a
        workdir whose ``config.json`` has other values in one of them is refused.

    Attributes:
      path: the folder.
      start_epoch: the epoch of the restored checkpoint (0: a new run); set by
        :meth:`resume`.
      history: the ``metrics.jsonl`` records of epochs ``1..start_epoch`` and
        of those this run trained (process 0; empty in the others).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: ml_collections.ConfigDict,
        *,
        model_fields: Sequence[str],
    ):
        _quiet_other_info_logs()
        self.path = pathlib.Path(path)
        self.config = config
        self.model_fields = tuple(model_fields)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._primary = is_primary()
        self._exit = contextlib.ExitStack()
        self._checkpoints: ocp.CheckpointManager | None = None
        self._writer: Any = None

    def __enter__(self) -> Workdir:
        """Holds the folder (process 0) and checks its ``config.json``; writes nothing.

        Raises:
          WorkdirError: another run holds the folder, it is a file, or its
            ``config.json`` is unreadable or differs in a model field.
        """
        with contextlib.ExitStack() as stack:
            if self._primary:
                stack.enter_context(_exclusive(self.path))
            difference = _differing_field(self.path, self.config, self.model_fields)
            if difference:
                raise WorkdirError(
                    f"workdir {str(self.path)!r} holds a run with {difference}; use another "
                    "--workdir to train this model."
                )
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Completes the checkpoint being written, closes the summaries, releases the folder."""
        self._exit.close()

    @property
    def resuming(self) -> bool:
        """Whether the folder holds a checkpoint (read before :meth:`resume`)."""
        return bool(checkpoints_lib.saved_steps(self.path / "checkpoints"))

    def resume(
        self,
        state: State,
        *,
        weights: Sequence[str] = (),
        evaluate: Callable[[State], Mapping[str, Any]] | None = None,
    ) -> State:
        """Takes over the folder and restores its newest readable checkpoint into ``state``.

        Restores the newest checkpoint that can be read (``state`` itself
        when there is none), cuts ``metrics.jsonl`` and the TensorBoard
        summaries back to its epoch, and writes ``config.json``. Call it after
        every check that can refuse the run: from here on the folder is this
        run's. A new run with ``config.init_checkpoint`` starts from the
        entries ``weights`` names of that run's newest checkpoint
        (:func:`load_init_checkpoint`; the rest, the optimizer state and the
        step, stay fresh) and logs their test accuracy before training.

        Args:
          state: a fresh train state, placed on the devices: the structure,
            shapes, dtypes and shardings to restore.
          weights: the entries of ``state`` (fields or keys) that
            ``config.init_checkpoint`` replaces, e.g. ``('params', 'model_state')``.
          evaluate: ``evaluate(state)['test_accuracy']``, logged before training
            from ``config.init_checkpoint``.

        Raises:
          WorkdirError: a checkpoint holds arrays of other shapes (another
            model), or no checkpoint can be read.
        """
        init_checkpoint, init_epoch = self.config.get("init_checkpoint"), 0
        if init_checkpoint and not self.resuming:  # read before the folder is taken over
            if not weights:
                raise ValueError("Workdir.resume: config.init_checkpoint needs `weights`.")
            like = {name: _entry(state, name) for name in weights}
            parts, init_epoch = load_init_checkpoint(str(init_checkpoint), like)
            state = _with_entries(state, parts)
        checkpoints = checkpoints_lib.open_manager(
            self.path / "checkpoints", self.config.checkpoints_to_keep
        )
        self._exit.callback(_close, checkpoints)
        self._checkpoints = checkpoints
        state, self.start_epoch = _restore_latest(checkpoints, state, primary=self._primary)
        if self.start_epoch:
            logging.info("Resuming from epoch %d of %d.", self.start_epoch, self.config.num_epochs)
        if self._primary:
            self.history = _read_metrics(self.path, up_to_epoch=self.start_epoch)
            _write_metrics(self.path, self.history)
            (self.path / CONFIG_FILE).write_text(
                self.config.to_json(indent=2, sort_keys=True) + "\n"
            )
            self._writer = summaries.create_writer(self.path, self.config, self.start_epoch)
            if self._writer is not None:
                self._exit.callback(self._writer.close)
        if init_epoch:
            start = f"Starting from the weights of {init_checkpoint} (epoch {init_epoch})"
            if evaluate is not None:
                accuracy = to_host(evaluate(state))["test_accuracy"]
                start += f": test accuracy {100 * accuracy:.2f}% before training"
            logging.info(start + ".")
        return state

    def train(
        self,
        state: State,
        run_epoch: RunEpoch,
        *,
        log_line: Callable[[dict[str, Any]], str],
        learning_rates: Sequence[str],
        examples_per_epoch: int | None = None,
    ) -> State:
        """Runs epochs ``start_epoch + 1 .. config.num_epochs`` and records each.

        Per epoch: ``run_epoch``; its metrics copied to the host as the
        epoch's record (``'epoch'``, floats, lists and dicts of floats, with
        ``'seconds'`` and ``'examples_per_second'`` added unless present);
        a check that its floats are finite; the record appended to
        ``metrics.jsonl`` and :attr:`history`; a checkpoint; TensorBoard
        scalars; the log line ``epoch <e>/<n>: <log_line(record)>``. A stop
        signal that arrives while an epoch is being recorded waits until its
        metrics line and checkpoint are handed over.

        Args:
          state: the state to train (from :meth:`resume`).
          run_epoch: ``run_epoch(state, epoch) -> (state, metrics)``; the
            epoch's data order must follow from ``epoch`` (e.g.
            ``fold_in(key, epoch)``), so that a resumed run ends where an
            uninterrupted one ends.
          log_line: an epoch's log line from its record.
          learning_rates: the config fields to lower when training diverges
            (the error names each, with its value).
          examples_per_epoch: the training examples of an epoch, for
            ``'examples_per_second'``.

        Returns:
          The final state.

        Raises:
          DivergedError: a float of the record is NaN or infinite (nothing of
            that epoch is recorded; the last good checkpoint is kept).
          StoppedError: SIGTERM or Ctrl-C; the message says where a rerun resumes.
        """
        if self._checkpoints is None:
            raise RuntimeError("Workdir.train needs Workdir.resume first.")
        checkpoints, num_epochs = self._checkpoints, self.config.num_epochs
        rates = [f"config.{name} (now {self.config[name]})" for name in learning_rates]
        advice = "lower " + " or ".join([", ".join(rates[:-1]), rates[-1]] if rates[1:] else rates)
        if self.start_epoch < num_epochs and self._primary:
            logging.info(
                "Training epochs %d..%d (the first one compiles).", self.start_epoch + 1, num_epochs
            )
        # In a run of several processes SIGTERM is left to JAX's preemption notifier.
        stop_signals = _StopSignals(sigterm=jax.process_count() == 1)
        epoch = self.start_epoch
        try:
            with stop_signals.installed():
                for epoch in range(self.start_epoch + 1, num_epochs + 1):
                    start = time.perf_counter()
                    state, metrics = run_epoch(state, epoch)
                    host = to_host(dict(metrics))  # in the order of metrics, not sorted
                    record = {"epoch": epoch, **{k: _jsonable(host[k]) for k in metrics}}
                    seconds = time.perf_counter() - start
                    record.setdefault("seconds", seconds)
                    if examples_per_epoch:
                        record.setdefault("examples_per_second", examples_per_epoch / seconds)
                    _check_finite(record, advice)
                    if self._primary:
                        _warn_if_energy_rose(record, self.config)
                    with stop_signals.deferred():
                        # The metrics line goes first: a run killed before its checkpoint
                        # is complete redoes the epoch, and the resume drops the line.
                        if self._primary:
                            self.history.append(record)
                            with (self.path / METRICS_FILE).open("a") as f:
                                f.write(json.dumps(record) + "\n")
                        checkpoints.save(epoch, args=ocp.args.StandardSave(state))
                    if self._writer is not None:
                        self._writer.write_scalars(epoch, summaries.scalars(record))
                    if self._primary:
                        logging.info(f"epoch {epoch}/{num_epochs}: {log_line(record)}")
                    if epoch < num_epochs and checkpoints.reached_preemption(epoch):
                        raise _Stop("a preemption notice (SIGTERM)")
        except _Stop as stop:
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
        return state


def load_init_checkpoint(
    workdir: str | os.PathLike[str], like: Mapping[str, Any]
) -> tuple[dict[str, Any], int]:
    """The parts ``like`` names of the newest checkpoint of another run's ``workdir``.

    For ``config.init_checkpoint``: a new run starts from another run's
    weights (``like={'params': ..., 'model_state': ...}``: the optimizer state
    and the step stay the new run's). ``workdir`` is only read.

    Args:
      workdir: the other run's folder.
      like: the top-level entries of the train state to take, each with the
        structure, shapes and shardings to restore into.

    Returns:
      ``(parts, epoch)``: the restored entries and the epoch of the checkpoint.

    Raises:
      WorkdirError: no checkpoint, one whose arrays do not fit ``like``, or
        one that cannot be read.
    """
    where = f"config.init_checkpoint = {str(workdir)!r}"
    folder = pathlib.Path(workdir) / "checkpoints"
    if not checkpoints_lib.saved_steps(folder):
        raise WorkdirError(
            f"{where} holds no checkpoint; it must be the workdir of a run of the same "
            "network (e.g. one with --config.algorithm=bp)."
        )
    try:
        return checkpoints_lib.restore_parts(folder, dict(like))
    except checkpoints_lib.MisfitError as misfit:
        raise WorkdirError(
            f"{where}: its newest checkpoint does not fit this config ({misfit})."
        ) from None
    except checkpoints_lib.UnreadableError as unread:
        raise WorkdirError(f"{where}: cannot read its newest checkpoint ({unread}).") from None


def _entry(state: Any, name: str) -> Any:
    """A train state's entry: a key of a mapping (NNX's state), else a field."""
    return state[name] if isinstance(state, Mapping) else getattr(state, name)


def _with_entries(state: Any, parts: Mapping[str, Any]) -> Any:
    """``state`` with ``parts`` replacing its entries (a fresh state: a mapping is updated)."""
    if isinstance(state, MutableMapping):
        state.update(parts)
        return state
    return state.replace(**parts)


# --- The folder ------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(workdir: pathlib.Path) -> Iterator[None]:
    """Holds an exclusive lock on ``workdir`` (a folder, made if missing) for the block.

    The lock is ``flock`` on the folder itself, which the OS drops when the
    process ends, however it ends; ``run.owner`` says who holds it (for the
    message a second run gets) until the block ends. A folder this made and
    left empty (the run stopped on bad input) is removed again.
    """
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
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        (workdir / OWNER_FILE).write_text(
            f"process {os.getpid()} on {socket.gethostname()}, since {started}\n"
        )
        yield
    finally:
        (workdir / OWNER_FILE).unlink(missing_ok=True)
        os.close(handle)  # releases the lock
        if created and not any(workdir.iterdir()):
            workdir.rmdir()


def _differing_field(
    workdir: pathlib.Path, config: ml_collections.ConfigDict, fields: Sequence[str]
) -> str:
    """``"<field> = <saved>, this config has <ours>"`` for the first differing field, or ``''``."""
    saved_file = workdir / CONFIG_FILE
    if not saved_file.exists():
        return ""
    try:
        saved = json.loads(saved_file.read_text())
    except (OSError, ValueError) as e:
        raise WorkdirError(f"cannot read {saved_file} ({e}); use another --workdir.") from None
    current = json.loads(config.to_json())  # tuples -> lists, as in config.json
    for field in fields:
        if field not in saved:
            return f"no field {field} (this config has {field} = {current[field]!r})"
        if saved[field] != current[field]:
            theirs, ours = (
                tuple(v) if isinstance(v, list) else v for v in (saved[field], current[field])
            )
            return f"{field} = {theirs!r}, this config has {ours!r}"
    return ""


def _read_metrics(workdir: pathlib.Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of epochs ``1..up_to_epoch``.

    Lines of later epochs (written before a kill, whose checkpoint never
    completed, or of checkpoints that could not be read) are left out.
    """
    path = workdir / METRICS_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= up_to_epoch]


def _write_metrics(workdir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Replaces ``metrics.jsonl`` with ``history``, atomically."""
    path = workdir / METRICS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)


def _restore_latest(
    checkpoints: ocp.CheckpointManager, state: State, *, primary: bool
) -> tuple[State, int]:
    """The newest readable checkpoint's state and epoch, or ``(state, 0)`` when there is none.

    A checkpoint that cannot be read (a full disk, a copy cut short) is
    skipped with a warning that names it and why, and the one before it is
    tried. When an older one is restored, the unreadable newer ones are moved
    to ``workdir/unreadable_checkpoints/`` (by process 0; the others wait),
    so that the run can write those epochs again; when none can be read,
    nothing is moved.

    Raises:
      WorkdirError: a checkpoint holds arrays of other shapes (another model),
        or no checkpoint can be read.
    """
    directory = pathlib.Path(checkpoints.directory)
    unreadable: list[tuple[int, str]] = []
    for epoch in sorted(checkpoints.all_steps(), reverse=True):
        try:
            restored = checkpoints_lib.restore(checkpoints, epoch, state)
        except checkpoints_lib.MisfitError as misfit:
            raise WorkdirError(
                f"the checkpoint of epoch {epoch} in {directory} does not fit this config "
                f"({misfit}); use another --workdir."
            ) from None
        except checkpoints_lib.UnreadableError as unread:
            logging.warning(
                "The checkpoint of epoch %d (%s) cannot be read (%s); trying the one before.",
                epoch, directory / str(epoch), unread,
            )  # fmt: skip
            unreadable.append((epoch, str(unread)))
            continue
        if unreadable:
            checkpoints_lib.set_aside(checkpoints, [e for e, _ in unreadable], primary=primary)
            logging.warning(
                "Resuming from the checkpoint of epoch %d; the unreadable ones were moved to %s.",
                epoch, directory.parent / UNREADABLE_DIR,
            )  # fmt: skip
        return restored, epoch
    if unreadable:
        listed = "; ".join(f"epoch {e}: {reason}" for e, reason in unreadable)
        raise WorkdirError(
            f"no checkpoint in {directory} can be read ({listed}). Use another --workdir, or "
            "move checkpoints/ away to start this one over."
        )
    return state, 0


def _close(checkpoints: ocp.CheckpointManager) -> None:
    checkpoints.wait_until_finished()
    checkpoints.close()


# --- The epoch's record -------------------------------------------------------------


def _jsonable(tree: Any) -> Any:
    """Python floats, lists and dicts (for ``metrics.jsonl``) of host arrays and scalars."""
    if isinstance(tree, Mapping):
        return {str(k): _jsonable(v) for k, v in tree.items()}
    array = np.asarray(tree)
    return array.item() if array.ndim == 0 else array.tolist()


def _warn_if_energy_rose(record: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    """Warns when inference raised the energy in some batches of the epoch.

    ``record['energy_rose']`` is the fraction of the epoch's batches whose
    ``train_step`` reported ``metrics['energy_rose']``: inference climbed the
    energy it should descend, most often because the node step is too large.
    """
    fraction = record.get("energy_rose")
    if not fraction:
        return
    step = config.get("node_learning_rate")
    hint = f"config.node_learning_rate (now {step})" if step is not None else "the node step"
    logging.warning(
        "epoch %d: the energy rose during inference in %.1f%% of the batches; "
        "inference should descend it: try a smaller %s.",
        record["epoch"],
        100 * fraction,
        hint,
    )


def _check_finite(record: dict[str, Any], advice: str) -> None:
    """Raises :class:`DivergedError` if a float of ``record`` is NaN or infinite."""
    bad = {k: v for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)}
    if not bad:
        return
    first = "train_energy" if "train_energy" in bad else next(iter(bad))
    what = "the energy" if first == "train_energy" else first.replace("_", " ")
    others = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items() if k != first)
    epoch = record["epoch"]
    kept = (
        f"The last good checkpoint (epoch {epoch - 1}) is kept."
        if epoch > 1
        else "No checkpoint was saved."
    )
    raise DivergedError(
        f"{what} became {bad[first]} in epoch {epoch}{f' ({others})' if others else ''}: "
        f"training diverged; {advice}. {kept}"
    )


# --- Stop signals and logs -----------------------------------------------------------


class _Stop(BaseException):
    """Raised by the signal handler; a BaseException so no ``except Exception`` eats it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _StopSignals:
    """SIGINT (and SIGTERM) raise :class:`_Stop`, except inside :meth:`deferred`.

    Inside it (the metrics line and the start of a checkpoint's save) a
    signal is held and raised when the block ends, so a run never stops
    half-way through recording an epoch.
    """

    def __init__(self, *, sigterm: bool):
        self._signals = (signal.SIGINT, signal.SIGTERM) if sigterm else (signal.SIGINT,)
        self._deferring = False
        self._pending: str | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._deferring:
            self._pending = name
        else:
            raise _Stop(name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in self._signals}
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
                name, self._pending = self._pending, None
                raise _Stop(name)


class _OwnInfoOnly(std_logging.Filter):
    """Keeps INFO lines of the examples only: orbax logs dozens per checkpoint."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_EXAMPLES)


def _quiet_other_info_logs() -> None:
    """Drops other libraries' INFO lines from the absl log (once per process)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
        handler.addFilter(_OwnInfoOnly())
