"""What every example run shares: the command line, the workdir, one-line errors.

``main.py`` runs ``workdir.make_main(train.train_and_evaluate)``; ``train.py`` does
``with Workdir(path, config) as run: state = run.train(run.resume(state), ...)``.
The workdir holds ``config.json``, ``metrics.jsonl``, TensorBoard summaries (clu)
and orbax checkpoints (atomic, the last ``config.checkpoints_to_keep``; JAX's
preemption notice with several processes). Added here: one run per workdir
(``flock``); a resume keeps the config but for :data:`RESUMABLE_FIELDS`; an
unreadable checkpoint gives way to the newest readable one; SIGTERM and Ctrl-C
stop after the epoch in progress.
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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from flax import traverse_util
from jax.experimental import multihost_utils
from ml_collections import config_flags

CONFIG_FILE, METRICS_FILE, OWNER_FILE = "config.json", "metrics.jsonl", "run.owner"
UNREADABLE_DIR = "unreadable_checkpoints"
#: The fields a resume may change: the length of the run and where things are read.
RESUMABLE_FIELDS = ("num_epochs", "checkpoints_to_keep", "eval_batch_size", "loop", "data_dir")

State = TypeVar("State")

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summaries and plots.")
config_flags.DEFINE_config_file("config", None, "The training configuration.", lock_config=True)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (several processes).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.DEFINE_integer("initialization_timeout", 60, "Seconds to wait for every process.")
flags.DEFINE_integer("heartbeat_timeout", 30, "Seconds after which a silent process ends the run.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


class UserError(Exception):
    """An error the user fixes; ``main`` prints it as one line ``Error: ...``, exit code 1."""


class ConfigError(UserError, ValueError):
    """A config field has a bad value."""


class WorkdirError(UserError):
    """The workdir cannot be used for this run (nothing in it was changed)."""


class DivergedError(UserError):
    """Training produced a non-finite energy, loss or metric."""


class StoppedError(UserError):
    """A stop signal (SIGTERM, Ctrl-C) ended the run; a rerun resumes it."""


def make_main(train_and_evaluate: Callable[[Any, str], Any]) -> Callable[[list[str]], None]:
    """``main(argv)`` for ``absl.app.run``: joins the processes the flags name, then trains.
    Several processes run one command, each with its ``--process_id`` (see the flags)."""

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError("Too many command-line arguments.")
        try:
            processes = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
            if processes != (None, None, None):
                _join(*processes, FLAGS.initialization_timeout, FLAGS.heartbeat_timeout)
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except UserError as e:
            raise SystemExit(f"Error: {e}") from None

    return main


def _join(address: str, count: int, index: int, timeout: int, heartbeat: int) -> None:
    """``jax.distributed.initialize``, with a clear error where JAX would abort the process."""
    host, _, port = (address or "").rpartition(":")
    deadline = time.monotonic() + timeout
    while index and time.monotonic() < deadline:  # JAX aborts if nothing answers: wait here
        with (
            contextlib.suppress(OSError, ValueError),
            socket.create_connection((host, int(port)), 1),
        ):
            break
        time.sleep(0.5)
    else:
        if index:
            raise UserError(
                f"process {index} could not join the run at {address} within {timeout} s: "
                "nothing answers there; start process 0 first."
            )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes
    try:
        jax.distributed.initialize(
            address,
            count,
            index,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=heartbeat,
        )
    except Exception as e:  # JAX's checks of the flags, or a runtime error from C++
        raise UserError(f"process {index} could not join the run at {address}: {e}") from None


class FieldChecker:
    """One-line checks of a config's fields; the first that fails raises :class:`ConfigError`."""

    def __init__(self, config: Any):
        self.config = config

    def check(self, name: str, ok: Any, expected: str) -> None:
        """Raises ``config.<name> = <value>: expected <expected>.`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"config.{name} = {self.config[name]!r}: expected {expected}.")

    def requires(self, name: str, ok: Any, why: str) -> None:
        """Raises ``config.<name> = <value> <why>.`` unless ``ok``: a field that needs others."""
        if not ok:
            raise ConfigError(f"config.{name} = {self.config[name]!r} {why}.")

    def _each(self, names: Sequence[str], ok: Callable[[Any], bool], expected: str) -> None:
        for name in names:
            v = self.config[name]
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            self.check(name, number and ok(v), expected)

    def positive_int(self, *names: str) -> None:
        self._each(names, lambda v: isinstance(v, int) and v > 0, "an int > 0")

    def non_negative_int(self, *names: str) -> None:
        self._each(names, lambda v: isinstance(v, int) and v >= 0, "an int >= 0")

    def positive_float(self, *names: str) -> None:
        self._each(names, lambda v: v > 0, "a number > 0")

    def non_negative_float(self, *names: str) -> None:
        self._each(names, lambda v: v >= 0, "a number >= 0")

    def fraction(self, *names: str) -> None:
        self._each(names, lambda v: 0 <= v < 1, "a number in [0, 1)")

    def one_of(self, name: str, choices: Any) -> None:
        self.check(name, self.config[name] in tuple(choices), f"one of {tuple(choices)}")

    def path(self, *names: str) -> None:
        for name in names:
            value = self.config[name]
            self.check(name, value is None or isinstance(value, str), "a path (or None)")

    def data_fields(self, datasets: Sequence[str]) -> None:
        """What :func:`examples.common.input_pipeline.load_splits` reads."""
        self.one_of("dataset", datasets)
        self.path("data_dir")
        self.positive_int("synthetic_train_size", "synthetic_test_size")

    def sizes(self, name: str, required: bool = True) -> None:
        """A tuple of ints > 0, non-empty when ``required``."""
        v = self.config[name]
        ints = isinstance(v, (tuple, list)) and all(type(s) is int and s > 0 for s in v)
        expected = "a non-empty tuple of ints > 0" if required else "a tuple of ints > 0"
        self.check(name, ints and (v or not required), expected)


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A ``ValueError``/``TypeError`` of the block (flax_pc checking the arguments the
    config gives it, under the library's names) as a one-line :class:`ConfigError`."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise ConfigError((str(e).splitlines() or [type(e).__name__])[0]) from e


def is_primary() -> bool:
    """Whether this process writes the run's records and log lines (process 0)."""
    return jax.process_index() == 0


def describe_devices(num_devices: int) -> str:
    """``'1 device'``, ``'4 devices'``, ``'4 devices in 2 processes'``."""
    text = f"{num_devices} device{'s' * (num_devices != 1)}"
    return text + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else "")


def to_host(tree: Any) -> Any:
    """NumPy copies of ``tree``'s arrays (a replicated one of several processes: ours)."""

    def get(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return jax.device_get(leaf)

    return jax.tree_util.tree_map(get, tree)


class Workdir:
    """A run's workdir, locked for the run (a context manager). ``history``: the records
    of ``metrics.jsonl`` (process 0); ``start_epoch``: the epoch :meth:`resume` restored."""

    def __init__(self, path: str | os.PathLike[str], config: Any):
        handler = logging.get_absl_handler()  # orbax logs dozens of INFO lines per checkpoint
        if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
            handler.addFilter(_OwnInfoOnly())
        self.path, self.config = pathlib.Path(path), config
        self.start_epoch, self.history = 0, []
        self._exit = contextlib.ExitStack()
        self._writer: Any = None
        self._checkpoints: Any = None

    def __enter__(self) -> Workdir:
        """Holds the folder (process 0) and compares its ``config.json``; writes nothing."""
        with contextlib.ExitStack() as stack:
            if is_primary():
                stack.enter_context(_exclusive(self.path))
            if (self.path / CONFIG_FILE).exists():
                _check_same_run(self.path, self.config)
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def resume(self, state: State, *, weights: Sequence[str] = (), evaluate: Any = None) -> State:
        """Restores the newest readable checkpoint into ``state`` (fresh, on the devices),
        after every check that can refuse the run: the folder is now this run's. A new run
        with ``config.init_checkpoint`` starts from that run's entries ``weights``."""
        folder = self.path / "checkpoints"
        if self.config.get("init_checkpoint") and not saved_epochs(folder):
            from examples.common import init_checkpoint  # imported only for such configs

            state = init_checkpoint.start_from(
                self.config.init_checkpoint, state, weights, evaluate
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.config.checkpoints_to_keep, create=True, cleanup_tmp_directories=True
        )
        handler = ocp.StandardCheckpointHandler()  # named, so that item_metadata reads shapes
        checkpoints = ocp.CheckpointManager(
            folder.absolute(), options=options, item_handlers=handler
        )
        self._checkpoints = checkpoints
        self._exit.callback(checkpoints.close)
        self._exit.callback(checkpoints.wait_until_finished)
        state, self.start_epoch = _restore_newest(checkpoints, state)
        if self.start_epoch:
            logging.info("Resuming from epoch %d of %d.", self.start_epoch, self.config.num_epochs)
        if is_primary():
            metrics = self.path / METRICS_FILE
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            self.history = [r for r in map(json.loads, lines) if r["epoch"] <= self.start_epoch]
            redone = len(lines) > len(self.history)  # epochs to train again
            _write(metrics, "".join(json.dumps(r) + "\n" for r in self.history))
            _write(self.path / CONFIG_FILE, self.config.to_json(indent=2, sort_keys=True))
            try:
                from clu import metric_writers
            except ImportError as e:  # clu's summary writer is tf.summary
                logging.warning("No TensorBoard summaries (%s): pip install tensorflow-cpu.", e)
            else:  # not create_default_writer: its logging writer repeats every scalar
                if redone:
                    from examples.common import tensorboard_restart

                    tensorboard_restart.restart_at(self.path, self.start_epoch + 1)
                self._writer = metric_writers.AsyncWriter(
                    metric_writers.SummaryWriter(str(self.path))
                )
                self._exit.callback(self._writer.close)
        return state

    def train(
        self,
        state: State,
        run_epoch: Callable[[State, int], tuple[State, Mapping[str, Any]]],
        *,
        log_line: Callable[[dict[str, Any]], str],
        learning_rates: Sequence[str],
        examples_per_epoch: int | None = None,
    ) -> State:
        """Runs epochs ``start_epoch + 1 .. config.num_epochs``: ``run_epoch(state, epoch)``
        (its data order drawn from ``epoch``, so that a resume ends where a whole run ends),
        then its metrics as a record in ``metrics.jsonl``, a checkpoint, TensorBoard and the
        log line ``log_line(record)``. Raises :class:`DivergedError` (advising lower
        ``learning_rates``) and :class:`StoppedError` (SIGTERM, Ctrl-C)."""
        checkpoints, num_epochs, epoch = self._checkpoints, self.config.num_epochs, self.start_epoch
        if checkpoints is None:
            raise RuntimeError("Workdir.train needs Workdir.resume first.")
        if epoch < num_epochs and is_primary():
            logging.info("Training epochs %d..%d (the first one compiles).", epoch + 1, num_epochs)
        with _stop_signals() as stop:
            for epoch in range(self.start_epoch + 1, num_epochs + 1):
                start = time.perf_counter()
                state, metrics = run_epoch(state, epoch)
                record = {"epoch": epoch, **_jsonable(to_host(dict(metrics)))}
                seconds = record.setdefault("seconds", time.perf_counter() - start)
                if examples_per_epoch:
                    record.setdefault("examples_per_second", examples_per_epoch / seconds)
                self._check(record, learning_rates)
                if is_primary():  # the line first: a resume drops a line without its checkpoint
                    self.history.append(record)
                    with (self.path / METRICS_FILE).open("a") as f:
                        f.write(json.dumps(record) + "\n")
                checkpoints.save(epoch, args=ocp.args.StandardSave(state))
                if self._writer is not None:  # energy_per_step/0, node_energies/<node>, ...
                    self._writer.write_scalars(epoch, _scalars(record))
                if is_primary():
                    logging.info(f"epoch {epoch}/{num_epochs}: {log_line(record)}")
                if epoch < num_epochs and checkpoints.reached_preemption(epoch):
                    stop.append("a preemption notice (SIGTERM)")
                if stop and epoch < num_epochs:
                    checkpoints.wait_until_finished()
                    raise StoppedError(
                        f"stopped by {stop[0]} after epoch {epoch}, whose checkpoint is "
                        f"complete: rerun the same command to resume from epoch {epoch}."
                    )
        return state

    def _check(self, record: dict[str, Any], learning_rates: Sequence[str]) -> None:
        """Raises :class:`DivergedError` for a float that is not finite; warns if energy rose."""
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        epoch, c = record["epoch"], self.config
        if bad:
            first = "train_energy" if "train_energy" in bad else bad[0]
            what = "the energy" if first == "train_energy" else first.replace("_", " ")
            rates = " or ".join(f"config.{name} (now {c[name]})" for name in learning_rates)
            raise DivergedError(
                f"{what} became {record[first]} in epoch {epoch}: training diverged; lower "
                f"{rates}. The checkpoints of the epochs before are kept."
            )
        if record.get("energy_rose") and is_primary():  # the fraction of batches
            logging.warning(
                f"epoch {epoch}: the energy rose during inference in "
                f"{100 * record['energy_rose']:.1f}% of the batches; inference should descend "
                f"it: try a smaller config.node_learning_rate (now {c.get('node_learning_rate')})."
            )


def plot_curves(
    history: Sequence[dict[str, Any]],
    path: pathlib.Path,
    panels: Mapping[str, Sequence[str]],
    title: str = "",
) -> None:
    """``curves.png``: a panel per entry of ``panels`` (a title: the record keys drawn per
    epoch), then the energy at each inference step, a line per epoch (``energy_per_step``)."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    energies = [r["energy_per_step"] for r in history if "energy_per_step" in r]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5 * len(panels) + 5, 4.2))
    for ax, (name, keys) in zip(axes, panels.items()):
        for key in keys:
            values = [r[key] for r in history]
            ax.plot(epochs, values, "o-", ms=3, label=f"{key.replace('_', ' ')}: {values[-1]:.4g}")
        ax.set(xlabel="epoch", title=name)
        ax.legend(fontsize="small")
    colours = plt.cm.viridis(np.linspace(0, 1, len(energies)))
    for epoch, energy, colour in zip(epochs, energies, colours):
        axes[-1].plot(range(len(energy)), energy, "o-", color=colour, ms=3, label=epoch)
    low, high = (min(map(min, energies)), max(map(max, energies))) if energies else (1, 1)
    axes[-1].set(
        xlabel="inference step t",
        ylabel="mean energy per example",
        title="Energy during inference, a line per epoch",
        yscale="log" if 0 < low < high / 20 else "linear",  # when it spans decades
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def _exclusive(workdir: pathlib.Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``workdir`` for the block; a folder made and left empty goes."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir {str(workdir)!r} exists and is not a folder.")
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    handle, owner = os.open(workdir, os.O_RDONLY), workdir / OWNER_FILE
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        by = f" ({owner.read_text().strip()})" if owner.exists() else ""
        raise WorkdirError(
            f"workdir {str(workdir)!r} is in use by another run{by}; wait for it "
            "to end, or use another --workdir."
        ) from None
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        owner.write_text(f"process {os.getpid()} on {socket.gethostname()}, since {since}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        os.close(handle)  # releases the lock
        if created and not any(workdir.iterdir()):
            workdir.rmdir()


def _check_same_run(workdir: pathlib.Path, config: Any) -> None:
    """Refuses a config that differs from the saved one outside :data:`RESUMABLE_FIELDS`."""
    try:
        saved = json.loads((workdir / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise WorkdirError(
            f"cannot read {workdir / CONFIG_FILE} ({e}); use another --workdir."
        ) from None
    ours = json.loads(config.to_json())  # tuples as lists, as in config.json
    for field in sorted(set(saved) | set(ours)):
        theirs, mine = (
            tuple(v) if isinstance(v, list) else v for v in (saved.get(field), ours.get(field))
        )
        if field not in RESUMABLE_FIELDS and theirs != mine:
            raise WorkdirError(
                f"workdir {str(workdir)!r} holds a run with {field} = {theirs!r}, this config has "
                f"{mine!r}; a resume may change only {', '.join(RESUMABLE_FIELDS)}. Use another "
                "--workdir for another run."
            )


def saved_epochs(folder: pathlib.Path) -> list[int]:
    """The epochs of the complete checkpoints in ``folder`` (orbax renames one when done)."""
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )


def _restore_newest(checkpoints: ocp.CheckpointManager, state: State) -> tuple[State, int]:
    """The newest readable checkpoint and its epoch (``(state, 0)``: none). Unreadable newer
    ones are moved to ``unreadable_checkpoints/`` once an older one restores."""
    directory, unreadable = pathlib.Path(checkpoints.directory), []
    for epoch in sorted(checkpoints.all_steps(), reverse=True):
        differs = _misfit(checkpoints, epoch, state)
        if differs:
            raise WorkdirError(
                f"the checkpoint of epoch {epoch} in {directory} does not fit this config "
                f"({differs}); use another --workdir."
            )
        try:
            restored = checkpoints.restore(epoch, args=ocp.args.StandardRestore(state))
        except Exception as e:  # a broken file fails in many ways
            unreadable.append(f"epoch {epoch}: {_reason(e)}")
            logging.warning(
                "The checkpoint of epoch %d (%s) cannot be read (%s); trying the one before.",
                epoch,
                directory / str(epoch),
                _reason(e),
            )
            continue
        aside = directory.parent / UNREADABLE_DIR
        for newer in [e for e in saved_epochs(directory) if e > epoch] if is_primary() else []:
            aside.mkdir(exist_ok=True)
            copies = (aside / ".".join(map(str, (newer, i)[: 1 + bool(i)])) for i in range(99))
            os.replace(directory / str(newer), next(c for c in copies if not c.exists()))
        if unreadable:
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("examples: checkpoints set aside")
            checkpoints.reload()
            logging.warning(
                "Resuming from the checkpoint of epoch %d; the unreadable ones were moved to %s.",
                epoch,
                aside,
            )
        return cast(State, restored), epoch
    if unreadable:
        raise WorkdirError(
            f"no checkpoint in {directory} can be read ({'; '.join(unreadable)}). "
            "Use another --workdir, or move checkpoints/ away to start over."
        )
    return state, 0


def _misfit(checkpoints: ocp.CheckpointManager, epoch: int, state: Any) -> str:
    try:
        saved = checkpoints.item_metadata(epoch)
    except Exception:  # unreadable metadata: the restore fails next, as unreadable
        return ""
    return misfit(saved, state)


def misfit(saved: Any, ours: Any) -> str:
    """The first array whose path or shape differs between a checkpoint's metadata and
    ``ours``, or '' (also when the metadata holds no arrays)."""
    saved, ours = _shapes(saved), _shapes(ours)
    if not saved:
        return ""
    for path in sorted(saved.keys() ^ ours.keys()) or [p for p in ours if ours[p] != saved[p]]:
        return f"{path}: {saved.get(path, 'absent')} there, {ours.get(path, 'absent')} here"
    return ""


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{'params/Dense_0/kernel': (784, 128), ...}``; a PRNG key by its key data, as saved."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): tuple(
            jax.random.key_data(leaf).shape
            if jax.numpy.issubdtype(getattr(leaf, "dtype", float), jax.dtypes.prng_key)
            else getattr(leaf, "shape", ())
        )
        for path, leaf in leaves
    }


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _write(path: pathlib.Path, text: str) -> None:
    """Replaces ``path``'s text at once (a crash leaves the old or the new)."""
    path.with_suffix(".tmp").write_text(text)
    os.replace(path.with_suffix(".tmp"), path)


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The floats of a record, ``energy_per_step/0`` and ``node_energies/<node>`` included."""
    nested = {k: {str(i): x for i, x in enumerate(v)} if isinstance(v, list) else v
              for k, v in record.items()}  # fmt: skip
    flat = traverse_util.flatten_dict(nested, sep="/")
    return {key: value for key, value in flat.items() if isinstance(value, float)}


def _jsonable(tree: Any) -> Any:
    """Python floats, lists and dicts of host arrays (for ``metrics.jsonl``)."""
    if isinstance(tree, Mapping):
        return {str(k): _jsonable(v) for k, v in tree.items()}
    return np.asarray(tree).tolist()


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[str]]:
    """SIGINT and SIGTERM append their name to the list the block gets: the run stops after
    the epoch in progress; a second SIGINT stops at once (KeyboardInterrupt). With several
    processes, SIGTERM is JAX's preemption notice (orbax's ``reached_preemption``)."""
    names: list[str] = []

    def handle(signum: int, frame: Any) -> None:
        names.append(signal.Signals(signum).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging.warning("%s: stopping after this epoch (Ctrl-C again: at once).", names[-1])

    signals = [signal.SIGINT] + [signal.SIGTERM] * (jax.process_count() == 1)
    previous = {s: signal.signal(s, handle) for s in signals}
    try:
        yield names
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _OwnInfoOnly(std_logging.Filter):
    """Keeps the INFO lines of the examples only (and every warning)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        examples = str(pathlib.Path(__file__).parents[1])
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(examples)
