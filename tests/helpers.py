"""Helpers shared by the tests: one pytree comparison, a checked training loop, the examples'
workdir files and log lines.

Fixtures live in ``conftest.py``; pytest's markers and warning filters in
``pyproject.toml``.
"""

import hashlib
import json
import pathlib

import jax
import numpy as np


def assert_trees_close(actual, expected, *, rtol=1e-7, atol=0.0, err_msg=""):
    """Asserts equal structure, then each leaf as ``np.testing.assert_allclose``.

    The structure is compared by key path (``['Dense_0']['kernel']``, ``.params``,
    ``[0]``), so train states whose static fields differ (a new optax
    transformation, say) still compare by their arrays. Shapes must match too
    (no broadcasting). ``rtol=0, atol=0`` asks for equal values.
    """
    actual_leaves = jax.tree_util.tree_flatten_with_path(actual)[0]
    expected_leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
    actual_paths = [jax.tree_util.keystr(path) for path, _ in actual_leaves]
    expected_paths = [jax.tree_util.keystr(path) for path, _ in expected_leaves]
    assert actual_paths == expected_paths, (
        f"{err_msg} the trees differ in structure:\n{actual_paths}\n{expected_paths}"
    )
    for path, (_, a), (_, e) in zip(actual_paths, actual_leaves, expected_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{err_msg} {path}: shape {a.shape} != {e.shape}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{err_msg} {path}")


def train_losses(state, x, y, steps):
    """``steps`` jitted ``train_step``s on ``(x, y)``.

    Asserts after each step that its inference never raised the energy (beyond 1e-5).

    Returns:
      ``(losses, metrics)``: the loss of every step, and the metrics of the last.
    """
    step = jax.jit(lambda s: s.train_step(x, y))
    losses = []
    for _ in range(steps):
        state, metrics = step(state)
        losses.append(float(metrics["loss"]))
        assert np.all(np.diff(np.asarray(metrics["energy"], np.float64)) <= 1e-5)
    return losses, metrics


def read_metrics(workdir):
    """The records of an example's ``metrics.jsonl``, one per epoch."""
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_tensorboard_scalars(workdir, scalars):
    """Each ``{tag: [value per epoch]}`` of ``scalars`` is in ``workdir``'s TensorBoard events,
    at steps 1, 2, ... (needs TensorBoard: for tests marked ``tensorflow``)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(workdir))
    events.Reload()
    for tag, expected in scalars.items():
        tensors = events.Tensors(tag)
        assert [t.step for t in tensors] == list(range(1, len(expected) + 1)), tag
        np.testing.assert_allclose([make_ndarray(t.tensor_proto) for t in tensors], expected)


def log_lines(caplog):
    """The absl log lines of an example's in-process run, as its main.py prints them."""
    return [record.getMessage() for record in caplog.records]


def snapshot(folder):
    """Every file under ``folder`` with its SHA-256 (to check that nothing changed)."""
    folder = pathlib.Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def with_overrides(config, overrides):
    """``config`` with ``overrides`` set field by field (type-checked, as the CLI does)."""
    for key, value in overrides.items():
        config[key] = value
    return config


def run_example(script, config, workdir, *flags):
    """``python <script> --config=<config> --workdir=<workdir> <flags>`` from the repository root.

    Returns the ``subprocess.CompletedProcess`` (output captured as text; 300 s at most).
    """
    import subprocess
    import sys

    command = [sys.executable, script, f"--config={config}", f"--workdir={workdir}", *flags]
    root = pathlib.Path(__file__).parents[1]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)


def assert_fields_commented(path):
    """Every ``config.<field> = ...`` line of the config file ``path`` (from the repository root)
    has a comment above it."""
    import re

    lines = (pathlib.Path(__file__).parents[1] / path).read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s+config\.\w+ = ", line):
            assert lines[number - 1].strip().startswith("#"), f"{path}:{number + 1}"


def assert_config_error(validate_config, config, field, value, message):
    """``validate_config`` rejects ``config`` with ``field`` set to ``value``: a ConfigError
    whose one line contains ``message``."""
    import re

    import pytest

    from examples.common.workdir import ConfigError

    config = with_overrides(config, {field: value})
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)
