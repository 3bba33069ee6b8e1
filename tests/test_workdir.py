"""The workdir is safe: one run and one model at a time, unreadable checkpoints fall back,
stop signals."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import generative_test
from configs import test as test_config
from examples.common import input_pipeline
from examples.common import workdir as workdir_lib
from examples.generative import train as generative_train
from examples.mnist import train

ROOT = pathlib.Path(__file__).parents[1]
MAIN = ROOT / "examples" / "mnist" / "main.py"


def _config(**overrides):
    config = test_config.get_config()
    for key, value in overrides.items():
        config[key] = value
    return config


def _epochs(workdir):
    lines = (pathlib.Path(workdir) / workdir_lib.METRICS_FILE).read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


def _final_accuracy(workdir):
    lines = (pathlib.Path(workdir) / workdir_lib.METRICS_FILE).read_text().splitlines()
    return json.loads(lines[-1])["test_accuracy"]


def _start(workdir, *flags):
    """main.py in a subprocess: the command a user types, on the test config."""
    return subprocess.Popen(
        [sys.executable, str(MAIN), "--config=configs/test.py", f"--workdir={workdir}", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# A run long enough to be caught mid-way: many small epochs, each checkpointed.
LONG = ("--config.num_epochs=60", "--config.synthetic_train_size=2048")


# --- One run per workdir --------------------------------------------------------


@pytest.mark.slow  # runs of the example
def test_a_held_workdir_is_refused_before_anything_is_touched(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(_config(num_epochs=1), str(workdir))
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    with workdir_lib.Workdir(workdir, _config()):  # another run holds it
        owner = workdir / workdir_lib.OWNER_FILE
        assert owner.read_text().startswith(f"process {os.getpid()} on ")
        with pytest.raises(
            workdir_lib.WorkdirError, match=f"in use by another run \\(process {os.getpid()}"
        ):
            train.train_and_evaluate(_config(num_epochs=2), str(workdir))
        with pytest.raises(workdir_lib.WorkdirError, match="in use by another run"):
            generative_train.train_and_evaluate(generative_test.get_config(), str(workdir))
        assert owner.exists()  # the refused runs leave the holder's record alone
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert after == before
    assert not owner.exists()  # the holder's record is gone with it


def test_a_bad_input_leaves_no_new_workdir(tmp_path):
    workdir = tmp_path / "new"
    with pytest.raises(input_pipeline.DataError):
        train.train_and_evaluate(
            _config(dataset="fashion_mnist", data_dir=str(tmp_path / "missing")), str(workdir)
        )
    assert not workdir.exists()


@pytest.mark.slow
def test_two_runs_on_one_workdir(tmp_path):
    workdir = tmp_path / "run"
    first = _start(workdir, *LONG)
    _wait_for(lambda: (workdir / workdir_lib.METRICS_FILE).exists() or first.poll() is not None)
    second = _start(workdir, *LONG)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert f"in use by another run (process {first.pid} on" in err
    assert err.strip().splitlines()[-1].startswith("Error: workdir")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert _epochs(workdir) == list(range(1, 61))


@pytest.mark.slow
def test_a_killed_run_leaves_no_lock(tmp_path):
    workdir = tmp_path / "run"
    first = _start(workdir, *LONG)
    checkpoints = workdir / "checkpoints"
    _wait_for(lambda: checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()))
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)  # reaps it and closes its pipes
    again = _start(workdir, "--config.num_epochs=3", LONG[1])
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert "Resuming from epoch" in err


# --- Unreadable checkpoints ---------------------------------------------------------


def _break(checkpoint_dir):
    for path in checkpoint_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")


@pytest.mark.slow  # runs of the example
def test_an_unreadable_newest_checkpoint_falls_back(tmp_path, caplog):
    whole = tmp_path / "whole"
    train.train_and_evaluate(_config(), str(whole))
    workdir = tmp_path / "broken"
    train.train_and_evaluate(_config(), str(workdir))
    _break(workdir / "checkpoints" / "3")
    with caplog.at_level("WARNING"):
        train.train_and_evaluate(_config(), str(workdir))
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "checkpoint of epoch 3" in warning and "cannot be read" in warning
    assert "Resuming from the checkpoint of epoch 2" in warning
    assert _epochs(workdir) == [1, 2, 3]
    assert abs(_final_accuracy(workdir) - _final_accuracy(whole)) <= 0.003
    assert (workdir / workdir_lib.UNREADABLE_DIR / "3").is_dir()
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        2,
        3,
    ]


@pytest.mark.slow  # runs of the example
@pytest.mark.tensorflow
def test_tensorboard_shows_each_epoch_once_after_a_fallback(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    workdir = tmp_path / "broken"
    train.train_and_evaluate(_config(), str(workdir))
    _break(workdir / "checkpoints" / "3")
    train.train_and_evaluate(_config(), str(workdir))  # redoes epoch 3
    events = EventAccumulator(str(workdir))
    events.Reload()
    # The restart event of the resumed run drops the first run's epoch 3.
    assert [e.step for e in events.Tensors("test_accuracy")] == [1, 2, 3]


@pytest.mark.slow  # runs of the example
def test_no_readable_checkpoint_is_an_error_and_moves_nothing(tmp_path):
    workdir = tmp_path / "broken"
    train.train_and_evaluate(_config(), str(workdir))
    for checkpoint in (workdir / "checkpoints").iterdir():
        if checkpoint.name.isdigit():
            _break(checkpoint)
    with pytest.raises(
        workdir_lib.WorkdirError, match="no checkpoint in .* can be read \\(epoch 3: "
    ):
        train.train_and_evaluate(_config(), str(workdir))
    assert not (workdir / workdir_lib.UNREADABLE_DIR).exists()


@pytest.mark.slow  # runs of the example
def test_a_checkpoint_of_another_model_does_not_fit(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(_config(num_epochs=1), str(workdir))
    (workdir / workdir_lib.CONFIG_FILE).unlink()  # nothing left to compare the config with
    with pytest.raises(
        workdir_lib.WorkdirError,
        match="does not fit this config \\(params/Dense_0/bias: \\(32,\\) there, \\(16,\\) here\\)",
    ):
        train.train_and_evaluate(_config(hidden_sizes=(16, 32)), str(workdir))
    assert (workdir / "checkpoints" / "1").is_dir()  # nothing moved


# --- One run per workdir: a resume keeps the config ------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The workdir of a finished one-epoch run of configs/test.py."""
    workdir = tmp_path_factory.mktemp("trained") / "workdir"
    train.train_and_evaluate(_config(num_epochs=1), str(workdir))
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, other",
    [("hidden_sizes", (16,)), ("activation", "relu"), ("learning_rate", 0.5), ("seed", 7),
     ("value_init", "zeros"), ("dataset", "mnist"), ("lr_schedule", "cosine")],
)  # fmt: skip
def test_a_resume_that_changes_the_config_is_refused(field, other, trained):
    """The model, the data and the training's maths: one line, both values, nothing touched."""
    config = _config(num_epochs=2)
    saved = config[field]
    config[field] = other
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    with pytest.raises(workdir_lib.WorkdirError) as raised:
        train.train_and_evaluate(config, str(trained))
    expected = f"holds a run with {field} = {saved!r}, this config has {other!r};"
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_resume_may_train_longer_and_read_data_elsewhere(trained, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    config = _config(num_epochs=2, eval_batch_size=17, checkpoints_to_keep=1, loop="batch")
    assert set(workdir_lib.RESUMABLE_FIELDS) >= {"num_epochs", "eval_batch_size", "loop"}
    train.train_and_evaluate(config, str(workdir))
    assert _epochs(workdir) == [1, 2]


@pytest.mark.slow
def test_init_checkpoint_starts_another_model_from_old_weights(tmp_path, caplog):
    """A standard residual MLP's weights, now trained as muPC, with ePC nodes."""
    short = {"num_epochs": 1, "synthetic_train_size": 128, "batch_size": 64}
    old = tmp_path / "old"
    config = _config(**short, model="residual_mlp", depth=4, width=16)
    train.train_and_evaluate(config, str(old))
    config = _config(**short, model="residual_mlp", depth=4, width=16, init_checkpoint=str(old))
    config.parameterization, config.latent = "mupc", "error"
    with caplog.at_level("INFO"):
        state = train.train_and_evaluate(config, str(tmp_path / "new"))
    assert f"Starting from the weights of {old} (epoch 1)" in caplog.text
    assert int(state.step) == 2  # its own optimizer, from step 0
    assert _epochs(tmp_path / "new") == [1]


# --- Stop signals -------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_rerun_ends_where_an_uninterrupted_run_ends(tmp_path):
    flags = ("--config.num_epochs=12", "--config.synthetic_train_size=2048")
    whole = tmp_path / "whole"
    run = _start(whole, *flags)
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]

    workdir = tmp_path / "stopped"
    run = _start(workdir, *flags)
    _wait_for(lambda: len(_epochs(workdir)) >= 2 if (workdir / "metrics.jsonl").exists() else False)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: stopped by SIGTERM after epoch"), last
    resume_epoch = int(last.rsplit("resume from epoch ", 1)[1].rstrip("."))
    assert resume_epoch >= 1
    assert max(_epochs(workdir)) <= resume_epoch + 1
    assert not (workdir / workdir_lib.OWNER_FILE).exists()

    rerun = _start(workdir, *flags)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert f"Resuming from epoch {resume_epoch} of 12" in err
    assert _epochs(workdir) == list(range(1, 13))
    np.testing.assert_allclose(_final_accuracy(workdir), _final_accuracy(whole), atol=1e-6)
