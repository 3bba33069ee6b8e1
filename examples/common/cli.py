"""The command line both examples share: ``--config``, ``--workdir``, one-line errors.

    python examples/<name>/main.py --config=configs/<config>.py --workdir=<folder>

Several hosts (or processes): start the same command in every process with
``--coordinator_address=<host:port of process 0> --num_processes=<P>
--process_id=<p>``; each process then joins one JAX run
(``jax.distributed.initialize``) and trains on its share of every batch.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
from absl import app, flags
from ml_collections import config_flags

from examples.common import config_checks, input_pipeline, workdir

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summaries and plots.")
config_flags.DEFINE_config_file(
    "config", None, "File path to the training hyperparameter configuration.", lock_config=True
)
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a run over several processes."
)
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.DEFINE_integer(
    "initialization_timeout", 60, "Seconds to wait for every process to join the run."
)
flags.DEFINE_integer(
    "heartbeat_timeout", 30, "Seconds after which a silent process ends the whole run."
)
flags.mark_flags_as_required(["config", "workdir"])


class DistributedError(Exception):
    """The processes of a multi-process run could not form one run."""


#: Errors the user fixes: printed as one line ``Error: ...``, exit code 1.
USER_ERRORS: tuple[type[Exception], ...] = (
    config_checks.ConfigError,
    workdir.WorkdirError,
    input_pipeline.DataError,
    workdir.DivergedError,
    workdir.StoppedError,
    DistributedError,
)


def join_processes() -> None:
    """``jax.distributed.initialize`` from the flags; nothing without them.

    Raises:
      DistributedError: the flags are incomplete, or the processes did not all
        join within ``--initialization_timeout`` seconds.
    """
    given = {
        "coordinator_address": FLAGS.coordinator_address,
        "num_processes": FLAGS.num_processes,
        "process_id": FLAGS.process_id,
    }
    if all(v is None for v in given.values()):
        return
    missing = [f"--{k}" for k, v in given.items() if v is None]
    if missing:
        raise DistributedError(f"a multi-process run needs {', '.join(missing)} too.")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
        raise DistributedError(
            f"--process_id={FLAGS.process_id} must be in 0..{FLAGS.num_processes - 1}."
        )
    if FLAGS.process_id != 0:
        # JAX aborts the process (a C++ fatal error) when it cannot reach the
        # coordinator: wait for it here, where a clear message can be given.
        _wait_for_coordinator(FLAGS.coordinator_address, FLAGS.initialization_timeout)
    # CPU processes exchange their arrays through gloo (GPUs use NCCL regardless).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
            initialization_timeout=FLAGS.initialization_timeout,
            heartbeat_timeout_seconds=FLAGS.heartbeat_timeout,
        )
    except Exception as e:  # JAX raises a runtime error from C++ here
        raise DistributedError(
            f"process {FLAGS.process_id} could not join the run at {FLAGS.coordinator_address} "
            f"within {FLAGS.initialization_timeout} s ({str(e).splitlines()[0]})."
        ) from None


def _wait_for_coordinator(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator_address={address!r}: expected host:port.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {FLAGS.process_id} could not join the run at {address} within "
                    f"{timeout:g} s: nothing answers there ({e.strerror or e}). Start process 0 "
                    "first, or check the address."
                ) from None
            time.sleep(0.5)


def make_main(train_and_evaluate: Callable[[Any, str], Any]) -> Callable[[list[str]], None]:
    """The ``main(argv)`` for ``absl.app.run``: trains, or exits with ``Error: ...``.

    Args:
      train_and_evaluate: the example's ``train_and_evaluate(config, workdir)``.
        A :data:`USER_ERRORS` error it raises is printed as one line, exit
        code 1; anything else is a bug (a traceback).
    """

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError("Too many command-line arguments.")
        try:
            join_processes()
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except USER_ERRORS as e:
            sys.exit(f"Error: {e}")

    return main
