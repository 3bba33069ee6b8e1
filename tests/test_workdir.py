"""The workdir is safe: one run and one model at a time, unreadable checkpoints fall back,
stop signals."""

import json
import os
import pathlib
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
    with workdir_lib.Workdir(workdir, _config(), model_fields=()):  # another run holds it
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
    again = _start(workdir, "--config.num_epochs=3")
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
        match="does not fit this config \\(params/Dense_0/bias has shape \\(32,\\) there, "
        "\\(16,\\) in this config's state\\)",
    ):
        train.train_and_evaluate(_config(hidden_sizes=(16, 32)), str(workdir))


# --- One model per workdir -----------------------------------------------------------

#: A valid value, other than configs/test.py's, for every field that defines a model.
OTHER_VALUES = {
    "dataset": "mnist",
    "model": "mlp",  # and "cnn" for the run of the MLP
    "hidden_sizes": (16,),
    "conv_features": (4,),
    "resnet_stem_features": 3,
    "resnet_stage_features": (2,),
    "resnet_blocks_per_stage": 2,
    "depth": 3,
    "width": 8,
    "parameterization": "mupc",
    "activation": "relu",
    "dropout_rate": 0.5,
    "value_init": "zeros",
    "value_init_stddev": 0.5,
    "latent": "error",
    "backward_precision": 0.1,
}
#: One short run of each model: a few steps of a tiny network.
SHORT = {"num_epochs": 1, "synthetic_train_size": 128, "batch_size": 64}
MODELS = {
    "mlp": {},
    "cnn": {"model": "cnn"},
    "resnet": {"model": "resnet"},
    "residual_mlp": {"model": "residual_mlp", "depth": 4, "width": 16},
    "flax_cnn": {"model": "flax_cnn"},
    "bpc": {"model": "bpc"},
}
CASES = [
    (model, field)
    for model, overrides in MODELS.items()
    for field in train.model_fields(_config(**overrides))
]


def test_every_model_of_the_example_is_run_below():
    assert set(MODELS) == set(train.MODELS)


def test_the_model_fields_follow_the_model():
    """Derived from what create_model reads: each model's own fields, never another's."""
    fields = {model: train.model_fields(_config(**o)) for model, o in MODELS.items()}
    node = ("value_init", "value_init_stddev", "latent")
    assert fields["mlp"] == (
        "dataset",
        "model",
        "hidden_sizes",
        "activation",
        *node,
        "dropout_rate",
    )
    assert fields["residual_mlp"][:5] == ("dataset", "model", "depth", "width", "parameterization")
    assert fields["flax_cnn"] == ("dataset", "model", *node)  # Flax's CNN: its nodes only
    assert fields["bpc"] == ("dataset", "model", "hidden_sizes", "backward_precision",
                             "activation", *node, "dropout_rate")  # fmt: skip
    assert "parameterization" not in fields["mlp"] and "conv_features" in fields["cnn"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(model)``: the workdir of a finished short run of ``model`` (made once)."""
    workdirs = {}

    def get(model):
        if model not in workdirs:
            workdirs[model] = tmp_path_factory.mktemp(model) / "workdir"
            train.train_and_evaluate(_config(**SHORT, **MODELS[model]), str(workdirs[model]))
        return workdirs[model]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("model, field", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_a_resume_that_changes_a_model_field_is_refused(model, field, trained):
    """Every field of ``train.model_fields`` (derived from the model): one line, both values."""
    assert field in OTHER_VALUES, f"add a value for the new model field {field!r} above"
    config = _config(**SHORT, **MODELS[model])
    saved, other = config[field], OTHER_VALUES[field]
    other = "cnn" if (field, saved) == ("model", "mlp") else other
    assert saved != other
    config[field] = other
    workdir = trained(model)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    with pytest.raises(workdir_lib.WorkdirError) as raised:
        train.train_and_evaluate(config, str(workdir))
    as_tuple = tuple if isinstance(saved, tuple) else lambda v: v
    expected = f"holds a run with {field} = {saved!r}, this config has {as_tuple(other)!r};"
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_checkpoint_of_other_optimizer_state_is_refused_by_its_arrays(trained):
    """A field outside the model that changes the state's arrays: the array is named."""
    config = _config(**SHORT, lr_schedule="cosine")  # a schedule counts its steps
    with pytest.raises(
        workdir_lib.WorkdirError,
        match=r"epoch 1 .* does not fit this config \(this config's state has opt_state/1/count",
    ):
        train.train_and_evaluate(config, str(trained("mlp")))


@pytest.mark.slow
def test_init_checkpoint_starts_another_model_from_old_weights(trained, tmp_path, caplog):
    """The issue's case: a standard residual MLP's weights, now trained as muPC, with ePC nodes."""
    old = trained("residual_mlp")
    config = _config(**SHORT, **MODELS["residual_mlp"], init_checkpoint=str(old))
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
    assert last.startswith("Error: stopped by SIGTERM in epoch"), last
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
