"""examples/mnist end to end: the documented command, resume after a kill, bad inputs, divergence.

Three tests start ``python examples/mnist/main.py`` in a subprocess, as a user
would: the documented command on ``configs/test.py`` (tiny, synthetic data), a
run killed mid-save and resumed on a pseudo-terminal, and a user error (one
``Error: ...`` line, exit code 1). Everything else calls
``train.train_and_evaluate`` in-process.
"""

import fcntl
import json
import os
import pathlib
import pty
import struct
import subprocess
import sys
import termios

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_tensorboard_scalars,
    assert_trees_close,
    log_lines,
    read_metrics,
    snapshot,
)

from examples.common import idx_files, input_pipeline
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError
from examples.mnist import train

ROOT = pathlib.Path(__file__).parents[1]
MAIN = "examples/mnist/main.py"
VOLATILE = ("seconds", "examples_per_second")  # wall-clock measurements
#: The in-process runs: one short epoch of configs/test.py.
SHORT = {"num_epochs": 1, "synthetic_train_size": 128, "synthetic_test_size": 32}

# Runs main.py but SIGKILLs itself when the checkpoint of epoch {epoch} is about
# to be saved: after that epoch's metrics line, before its checkpoint exists.
KILLED_AT_SAVE = """
import os, signal, sys
sys.argv = ["{main}"] + sys.argv[1:]
import orbax.checkpoint as ocp
from absl import app
from examples.mnist import main

save = ocp.CheckpointManager.save

def save_or_die(self, step, *args, **kwargs):
    if step == {epoch}:
        self.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, step, *args, **kwargs)

ocp.CheckpointManager.save = save_or_die
app.run(main.main)
"""


def run_main(workdir, *flags, config="configs/test.py", script=None, tty=False):
    """Runs the example; returns (returncode, stderr, stdout)."""
    args = [f"--config={config}", f"--workdir={workdir}", *flags]
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, MAIN, *args]
    if not tty:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        return result.returncode, result.stderr, result.stdout
    # stderr on a pseudo-terminal, as in an interactive shell.
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = process.communicate(timeout=600)[0]
    os.close(leader)
    return process.returncode, b"".join(chunks).decode(errors="replace"), stdout.decode()


def deterministic(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def checkpoint_steps(workdir):
    folder = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete 3-epoch run of the documented command: (workdir, returncode, stderr)."""
    workdir = tmp_path_factory.mktemp("finished") / "workdir"
    code, stderr, _ = run_main(workdir)
    return workdir, code, stderr


# --- The command line (subprocesses) ------------------------------------------


@pytest.mark.slow
def test_documented_command_trains_and_saves_everything(finished):
    """Run as with the ``test`` extra alone: no TensorFlow, so no TensorBoard summaries
    (``test_tensorboard_summaries_of_every_epoch`` checks them in-process)."""
    workdir, code, stderr = finished
    assert code == 0, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert "Final test accuracy: " in last_line and "after 3 epochs" in last_line
    assert "epoch 3/3: train energy" in stderr  # a plain log line per epoch off a terminal

    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for record in records:
        for key in ("train_energy", "train_loss", "test_accuracy", "test_loss", *VOLATILE):
            assert isinstance(record[key], float)
        assert len(record["energy_per_step"]) == 4 + 1  # inference_steps + 1
        assert set(record["node_energies"]) == {"PCNode_0", "PCNode_1"}
    assert records[-1]["test_accuracy"] > 0.5  # the synthetic classes are learnable
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert f"{100 * records[-1]['test_accuracy']:.2f}%" in last_line

    assert checkpoint_steps(workdir) == [2, 3]  # checkpoints_to_keep = 2
    config = json.loads((workdir / "config.json").read_text())
    assert config["dataset"] == "synthetic" and config["hidden_sizes"] == [32, 32]
    assert "No TensorBoard summaries" in stderr and "pip install tensorflow-cpu" in stderr
    assert not list(workdir.glob("events.out.tfevents.*"))
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.tensorflow
@pytest.mark.slow  # a run of the example
def test_tensorboard_summaries_of_every_epoch(mnist_config, tmp_path):
    """With TensorFlow, a run writes each epoch's record as scalars."""
    train.train_and_evaluate(mnist_config(**{**SHORT, "num_epochs": 2}), str(tmp_path))
    records = read_metrics(tmp_path)
    scalars = {
        "test_accuracy": [r["test_accuracy"] for r in records],
        "energy_per_step/4": [r["energy_per_step"][4] for r in records],
        "node_energies/PCNode_1": [r["node_energies"]["PCNode_1"] for r in records],
    }
    assert [r["epoch"] for r in records] == [1, 2]
    assert_tensorboard_scalars(tmp_path, scalars)


def test_user_error_is_one_line_and_exit_code_1(tmp_path):
    """main.py prints a user error (here a bad config value) as one line, no traceback.

    Not slow: the error comes before any training. The other user errors are
    checked in-process (``workdir_lib.UserError`` are the ones printed so).
    """
    code, stderr, _ = run_main(tmp_path / "new", "--config.learning_rate=-0.1")
    assert code == 1
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: config.learning_rate = -0.1"), stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(finished, tmp_path):
    workdir = tmp_path / "workdir"
    code, stderr, _ = run_main(workdir, script=KILLED_AT_SAVE.format(main=MAIN, epoch=2))
    assert code == -9, stderr
    assert [r["epoch"] for r in read_metrics(workdir)] == [1, 2]  # epoch 2: no checkpoint yet
    assert checkpoint_steps(workdir) == [1]

    code, stderr, _ = run_main(workdir, tty=True)
    assert code == 0, stderr
    assert "Resuming from epoch 1 of 3" in stderr
    assert "epoch 2/3: train energy" in stderr and "epoch 3/3: train energy" in stderr
    assert deterministic(read_metrics(workdir)) == deterministic(read_metrics(finished[0]))
    assert checkpoint_steps(workdir) == [2, 3]


IMPORTED = """
import atexit, sys
sys.argv = ["{main}"] + sys.argv[1:]
PACKAGES = ("examples", "configs")
from absl import app
from examples.mnist import main

def report():
    ours = [m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] in PACKAGES]
    print(*sorted(f for f in ours if not f.endswith("__init__.py")), sep="\\n")

atexit.register(report)
app.run(main.main)
"""


@pytest.mark.slow
def test_the_headline_command_imports_six_files_of_the_examples(tmp_path):
    """What a newcomer reads: the files of examples/ and configs/ that the default run imports."""
    flags = ("--config.dataset=synthetic", "--config.num_epochs=1", "--config.batch_size=64")
    code, stderr, stdout = run_main(
        tmp_path / "run", *flags, config="configs/default.py", script=IMPORTED.format(main=MAIN)
    )
    assert code == 0, stderr
    # The --config file, which config_flags loads by its path, and the modules imported.
    files = {
        "configs/default.py",
        *(str(pathlib.Path(f).relative_to(ROOT)) for f in stdout.split()),
    }
    assert files == {
        "configs/default.py",
        "examples/mnist/main.py",
        "examples/mnist/train.py",
        "examples/mnist/models.py",
        "examples/common/workdir.py",
        "examples/common/input_pipeline.py",
    }
    lines = sum(len((ROOT / f).read_text().splitlines()) for f in files)
    assert lines <= 1300, lines  # Flax's ImageNet example: 5 files, 975 lines


# --- Resume, bad inputs, divergence (in-process) -------------------------------


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing(finished_copy, mnist_config, caplog):
    caplog.set_level("INFO")
    before = read_metrics(finished_copy)
    state = train.train_and_evaluate(mnist_config(), str(finished_copy))
    assert int(state.step) == 3 * 512 // 64
    log = log_lines(caplog)
    assert "Resuming from epoch 3 of 3." in log
    assert read_metrics(finished_copy) == before
    accuracy = 100 * before[-1]["test_accuracy"]
    final = [line for line in log if line.startswith("Final test accuracy")]
    assert final == [f"Final test accuracy: {accuracy:.2f}% after 3 epochs."]


def _corrupt_data_dir(folder):
    folder.mkdir()
    for name in idx_files.IDX_FILES.values():
        (folder / name).write_bytes(b"not gzip")
    return folder


# name: (config overrides, the error, its words, run in the finished workdir or a new one)
BAD_INPUTS = {
    "unknown dataset": (
        {"dataset": "cifar10"}, ConfigError, "config.dataset = 'cifar10'", "finished"
    ),
    "unknown model": ({"model": "vgg"}, ConfigError, "config.model = 'vgg'", "finished"),
    "negative size": (
        {"hidden_sizes": (32, -4)}, ConfigError, "config.hidden_sizes", "finished"
    ),
    "zero node learning rate": (
        {"node_learning_rate": 0}, ConfigError, "config.node_learning_rate", "finished"
    ),
    "negative learning rate": (
        {"learning_rate": -0.1}, ConfigError, "config.learning_rate", "new"
    ),
    "batch larger than data": (
        {"batch_size": 4096},
        ConfigError,
        r"larger than the training set \(512 examples\)",
        "new",
    ),
    "data_dir without files": (
        {"dataset": "mnist", "data_dir": "{tmp}"},
        input_pipeline.DataError,
        "lacks train-images-idx3-ubyte.gz",
        "new",
    ),
    "data_dir with corrupt files": (
        {"dataset": "mnist", "data_dir": "{corrupt}"},
        input_pipeline.DataError,
        "not a readable gzip file",
        "new",
    ),
    "incompatible checkpoint": (
        {"hidden_sizes": (16,)},
        workdir_lib.WorkdirError,
        r"holds a run with hidden_sizes = \(32, 32\), this config has \(16,\)",
        "finished",
    ),
}  # fmt: skip


def _needs_finished(case):
    # A finished workdir is the documented command's run: a subprocess, slow.
    return [pytest.mark.slow] if BAD_INPUTS[case][3] == "finished" else []


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=_needs_finished(case)) for case in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_changes_nothing(case, mnist_config, request, tmp_path):
    overrides, error, message, where = BAD_INPUTS[case]
    corrupt = _corrupt_data_dir(tmp_path / "corrupt")
    overrides = {
        k: v.format(tmp=tmp_path, corrupt=corrupt) if isinstance(v, str) else v
        for k, v in overrides.items()
    }
    workdir = request.getfixturevalue("finished_copy") if where == "finished" else None
    before = snapshot(workdir) if workdir else None
    with pytest.raises(error, match=message) as raised:
        train.train_and_evaluate(mnist_config(**overrides), str(workdir or tmp_path / "new"))
    assert isinstance(raised.value, workdir_lib.UserError)  # main.py prints "Error: ..."
    assert "\n" not in str(raised.value)
    if workdir:
        assert snapshot(workdir) == before
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    finished_copy, mnist_config, monkeypatch
):
    checkpoints = snapshot(finished_copy / "checkpoints")
    metrics = read_metrics(finished_copy)
    summarize = train.summarize_epoch  # epoch 4 diverges
    monkeypatch.setattr(
        train, "summarize_epoch", lambda m: {**summarize(m), "train_energy": jnp.inf}
    )
    with pytest.raises(workdir_lib.DivergedError, match="^the energy became inf") as raised:
        train.train_and_evaluate(mnist_config(num_epochs=4), str(finished_copy))
    message = str(raised.value)
    assert isinstance(raised.value, workdir_lib.UserError) and "\n" not in message
    assert "in epoch 4" in message and "config.node_learning_rate (now 0.01)" in message
    assert snapshot(finished_copy / "checkpoints") == checkpoints
    assert read_metrics(finished_copy) == metrics


# --- Other models and loops (in-process) ---------------------------------------


# A tiny ResNet with BatchNorm and dropout (trained by PC, so dropout runs under inference).
RESNET = {
    "model": "resnet",
    "activation": "relu",
    "resnet_stem_features": 4,
    "resnet_stage_features": (4, 8),
    "dropout_rate": 0.25,
    "batch_size": 32,
}


RESIDUAL_MLP = {
    "model": "residual_mlp",
    "depth": 6,
    "width": 16,
    "parameterization": "mupc",
    "latent": "error",
    "activation": "tanh",  # smooth: with relu, |dF/dv| stalls at its kinks
    "node_learning_rate": 0.2,
    "inference_steps": 50,
    "tolerance": 1e-3,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        RESNET,
        {"model": "cnn", "hidden_sizes": (16,)},
        {"algorithm": "ipc", "output_energy": "cross_entropy", "value_init": "zeros"},
        {"algorithm": "bp", "optimizer": "adamw", "weight_decay": 1e-4, "lr_schedule": "cosine"},
        RESIDUAL_MLP,
    ],
    ids=[
        "resnet-batchnorm-dropout",
        "cnn",
        "ipc-cross-entropy-zeros",
        "bp-adamw-cosine",
        "residual-mlp-mupc-epc",
    ],
)
def test_variants_train_in_process(overrides, mnist_config, tmp_path):
    state = train.train_and_evaluate(mnist_config(**SHORT, **overrides), str(tmp_path))
    records = read_metrics(tmp_path)
    assert len(records) == 1 and np.isfinite(records[0]["train_energy"])
    assert int(state.step) > 0
    assert (tmp_path / "curves.png").exists()
    if overrides.get("model") == "resnet":
        # The running averages moved away from their initial values (mean 0, variance 1).
        stats = state.model_state["batch_stats"]["stem_norm"]
        assert np.abs(np.asarray(stats["mean"])).max() > 0
        assert len(records[0]["node_energies"]) == 3  # after the stem and the two blocks
    if overrides.get("model") == "residual_mlp":
        assert len(records[0]["node_energies"]) == 5  # after every layer but the output
        assert set(state.params["ScaledDense_0"]) == {"kernel"}
        assert 1 <= records[0]["inference_steps"] < 50  # stopped at the tolerance
        assert len(records[0]["energy_per_step"]) == 2  # before and after inference


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, rtol",
    [({"value_init": "normal", "dropout_rate": 0.25}, 1e-4), (RESNET, 1e-2)],
    ids=["mlp-normal-init-dropout", "resnet-batchnorm-dropout"],
)
def test_batch_loop_gives_the_epoch_loops_result(overrides, rtol, mnist_config, tmp_path):
    """``loop='batch'`` draws the same batches and keys as ``fpc.train_epoch``.

    The two compile differently, so the results agree up to float rounding;
    Adam amplifies it (an update of ``lr * g / |g|`` for a gradient ``g`` near
    zero), most in the tiny ResNet: relative 1e-6 in the train metrics after
    its first batches, 1e-3 in the test loss after 8, and some of its params
    (near-zero gradients) differ by 20%. So the ResNet's metrics are compared,
    the MLP's params too. Another data order or dropout mask changes the
    metrics by far more.
    """
    states, records = {}, {}
    for loop_kind in ("epoch", "batch"):
        config = mnist_config(**{**SHORT, "num_epochs": 2}, loop=loop_kind, **overrides)
        states[loop_kind] = train.train_and_evaluate(config, str(tmp_path / loop_kind))
        records[loop_kind] = deterministic(read_metrics(tmp_path / loop_kind))
    assert_trees_close(records["batch"], records["epoch"], rtol=rtol, atol=1e-4, err_msg="metrics")
    if overrides.get("model") != "resnet":
        assert_trees_close(
            states["batch"].params, states["epoch"].params, rtol=rtol, atol=1e-4, err_msg="params"
        )
    assert int(states["batch"].step) == int(states["epoch"].step) == 2 * (128 // config.batch_size)


@pytest.mark.slow
def test_model_state_survives_checkpoint_and_resume(mnist_config, tmp_path):
    config = mnist_config(**{**SHORT, "num_epochs": 2}, **RESNET)
    whole = train.train_and_evaluate(config, str(tmp_path / "whole"))

    config.num_epochs = 1
    first = train.train_and_evaluate(config, str(tmp_path / "resumed"))
    restored = train.train_and_evaluate(config, str(tmp_path / "resumed"))  # trains nothing
    assert set(restored.model_state) == {"batch_stats"}
    assert_trees_close(restored.model_state, first.model_state, rtol=0, atol=0)
    fresh = train.create_train_state(config, jax.random.key(0), steps_per_epoch=4)
    assert any(  # training moved the batch statistics
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(fresh.model_state), jax.tree.leaves(restored.model_state))
    )

    config.num_epochs = 2
    resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert deterministic(read_metrics(tmp_path / "resumed")) == deterministic(
        read_metrics(tmp_path / "whole")
    )
    assert_trees_close(resumed.model_state, whole.model_state, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_tfds_mnist_in_process(mnist_config, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(input_pipeline, "network_available", lambda: True)
    config = mnist_config(**SHORT, dataset="mnist", batch_size=32)
    with tfds.testing.mock_data(num_examples=100):
        train.train_and_evaluate(config, str(tmp_path))
    (record,) = read_metrics(tmp_path)
    assert record["examples_per_second"] > 0 and record["epoch"] == 1


@pytest.mark.slow  # two runs of the example
def test_an_epoch_whose_inference_raised_the_energy_is_warned_about(tmp_path, mnist_config, caplog):
    caplog.set_level("WARNING")
    # A node step far too large: inference overshoots and climbs the energy.
    train.train_and_evaluate(mnist_config(node_learning_rate=3.0, **SHORT), str(tmp_path / "a"))
    record = read_metrics(tmp_path / "a")[-1]
    assert 0 < record["energy_rose"] <= 1
    warnings = [line for line in log_lines(caplog) if "energy rose" in line]
    assert warnings == [
        f"epoch 1: the energy rose during inference in {100 * record['energy_rose']:.1f}% of "
        "the batches; inference should descend it: try a smaller "
        "config.node_learning_rate (now 3.0)."
    ]
    caplog.clear()
    train.train_and_evaluate(mnist_config(**SHORT), str(tmp_path / "b"))
    assert read_metrics(tmp_path / "b")[-1]["energy_rose"] == 0
    assert not [line for line in log_lines(caplog) if "energy rose" in line]
