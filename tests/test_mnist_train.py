"""examples/mnist end to end: the documented command, resume after a kill, bad inputs, divergence.

Each test runs ``python examples/mnist/main.py --config=configs/test.py`` (tiny,
synthetic data) in a subprocess, as a user would.
"""

import fcntl
import hashlib
import importlib.util
import json
import os
import pathlib
import pty
import shutil
import struct
import subprocess
import sys
import termios

import jax
import numpy as np
import pytest

from flax_pc_examples.common import input_pipeline
from flax_pc_examples.mnist import train

ROOT = pathlib.Path(__file__).parents[1]
MAIN = "examples/mnist/main.py"
VOLATILE = ("seconds", "examples_per_second")  # wall-clock measurements

# Runs main.py but SIGKILLs itself when the checkpoint of epoch {epoch} is about
# to be saved: after that epoch's metrics line, before its checkpoint exists.
KILLED_AT_SAVE = """
import os, signal, sys
sys.argv = ["{main}"] + sys.argv[1:]
from absl import app
from flax_pc_examples.mnist import main, train

save = train.ocp.CheckpointManager.save

def save_or_die(self, step, *args, **kwargs):
    if step == {epoch}:
        self.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, step, *args, **kwargs)

train.ocp.CheckpointManager.save = save_or_die
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


def read_metrics(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def deterministic(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def snapshot(folder):
    """Every file under ``folder`` with its SHA-256."""
    folder = pathlib.Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoint_steps(workdir):
    folder = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete 3-epoch run of configs/test.py: (workdir, returncode, stderr)."""
    workdir = tmp_path_factory.mktemp("finished") / "workdir"
    code, stderr, _ = run_main(workdir)
    return workdir, code, stderr


@pytest.fixture
def finished_copy(finished, tmp_path):
    copy = tmp_path / "workdir"
    shutil.copytree(finished[0], copy)
    return copy


@pytest.mark.slow
def test_documented_command_trains_and_saves_everything(finished):
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
    assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard summaries"
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


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
    assert "3/3" in stderr and ("epoch/s" in stderr or "s/epoch" in stderr)  # tqdm's bar
    assert deterministic(read_metrics(workdir)) == deterministic(read_metrics(finished[0]))
    assert checkpoint_steps(workdir) == [2, 3]


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing(finished, finished_copy):
    before = read_metrics(finished_copy)
    code, stderr, _ = run_main(finished_copy)
    assert code == 0, stderr
    assert "Resuming from epoch 3 of 3" in stderr
    assert read_metrics(finished_copy) == before
    assert (
        stderr.strip()
        .splitlines()[-1]
        .endswith(f"Final test accuracy: {100 * before[-1]['test_accuracy']:.2f}% after 3 epochs.")
    )


def _corrupt_data_dir(folder):
    folder.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (folder / name).write_bytes(b"not gzip")
    return folder


# name: (flags, the error's words, run in the finished workdir or in a new one)
BAD_INPUTS = {
    "unknown dataset": (["--config.dataset=cifar10"], "config.dataset = 'cifar10'", "finished"),
    "unknown model": (["--config.model=vgg"], "config.model = 'vgg'", "finished"),
    "negative size": (["--config.hidden_sizes=(32,-4)"], "config.hidden_sizes", "finished"),
    "zero node learning rate": (
        ["--config.node_learning_rate=0"],
        "config.node_learning_rate",
        "finished",
    ),
    "negative learning rate": (["--config.learning_rate=-0.1"], "config.learning_rate", "new"),
    "batch larger than data": (
        ["--config.batch_size=4096"],
        "larger than the training set (512 examples)",
        "finished",
    ),
    "data_dir without files": (
        ["--config.dataset=mnist", "--config.data_dir={tmp}"],
        "lacks train-images-idx3-ubyte.gz",
        "new",
    ),
    "data_dir with corrupt files": (
        ["--config.dataset=mnist", "--config.data_dir={corrupt}"],
        "not a readable gzip file",
        "new",
    ),
    "incompatible checkpoint": (
        ["--config.hidden_sizes=(16,)"],
        "holds a run with hidden_sizes = (32, 32), this config has (16,)",
        "finished",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_changes_nothing(case, finished_copy, tmp_path):
    flags, message, workdir = BAD_INPUTS[case]
    corrupt = _corrupt_data_dir(tmp_path / "corrupt")
    flags = [f.format(tmp=tmp_path, corrupt=corrupt) for f in flags]
    workdir = finished_copy if workdir == "finished" else tmp_path / "new"
    before = snapshot(finished_copy)
    code, stderr, _ = run_main(workdir, *flags)
    assert code == 1
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: ") and message in last_line, stderr
    assert snapshot(finished_copy) == before
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_divergence_stops_and_keeps_the_last_good_checkpoint(finished_copy):
    checkpoints = snapshot(finished_copy / "checkpoints")
    metrics = read_metrics(finished_copy)
    code, stderr, _ = run_main(
        finished_copy, "--config.num_epochs=4", "--config.node_learning_rate=1e30"
    )
    assert code == 1
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: the energy became") and "in epoch 4" in last_line
    assert "config.node_learning_rate (now 1e+30)" in last_line
    assert "Traceback" not in stderr
    assert snapshot(finished_copy / "checkpoints") == checkpoints
    assert read_metrics(finished_copy) == metrics


def _test_config(**overrides):
    spec = importlib.util.spec_from_file_location("configs_test", ROOT / "configs" / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.num_epochs = 1
    config.synthetic_train_size = 128
    config.synthetic_test_size = 32
    for key, value in overrides.items():
        config[key] = value
    return config


# A tiny ResNet with BatchNorm and dropout (trained by PC, so dropout runs under inference).
RESNET = {
    "model": "resnet",
    "activation": "relu",
    "resnet_stem_features": 4,
    "resnet_stage_features": (4, 8),
    "dropout_rate": 0.25,
    "batch_size": 32,
}


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        RESNET,
        {"model": "cnn", "hidden_sizes": (16,)},
        {"algorithm": "ipc", "output_energy": "cross_entropy", "node_init": "zeros"},
        {"algorithm": "bp", "optimizer": "adamw", "weight_decay": 1e-4, "lr_schedule": "cosine"},
    ],
    ids=["resnet-batchnorm-dropout", "cnn", "ipc-cross-entropy-zeros", "bp-adamw-cosine"],
)
def test_variants_train_in_process(overrides, tmp_path):

    state = train.train_and_evaluate(_test_config(**overrides), str(tmp_path))
    records = read_metrics(tmp_path)
    assert len(records) == 1 and np.isfinite(records[0]["train_energy"])
    assert int(state.step) > 0
    assert (tmp_path / "curves.png").exists()
    if overrides.get("model") == "resnet":
        # The running averages moved away from their initial values (mean 0, variance 1).
        stats = state.model_state["batch_stats"]["stem_norm"]
        assert np.abs(np.asarray(stats["mean"])).max() > 0
        assert len(records[0]["node_energies"]) == 3  # after the stem and the two blocks


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, rtol",
    [({"node_init": "normal", "dropout_rate": 0.25}, 1e-4), (RESNET, 1e-2)],
    ids=["mlp-normal-init-dropout", "resnet-batchnorm-dropout"],
)
def test_batch_loop_gives_the_epoch_loops_result(overrides, rtol, tmp_path):
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
    for loop in ("epoch", "batch"):
        config = _test_config(loop=loop, num_epochs=2, **overrides)
        states[loop] = train.train_and_evaluate(config, str(tmp_path / loop))
        records[loop] = deterministic(read_metrics(tmp_path / loop))
    assert jax.tree_util.tree_structure(records["epoch"]) == jax.tree_util.tree_structure(
        records["batch"]
    )
    compared = ("metrics",) if overrides.get("model") == "resnet" else ("metrics", "params")
    for name, expected, actual in zip(
        compared,
        [records["epoch"], states["epoch"].params],
        [records["batch"], states["batch"].params],
    ):
        for e, a in zip(_leaves(expected), _leaves(actual)):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-4, err_msg=name)
    assert int(states["batch"].step) == int(states["epoch"].step) == 2 * (128 // config.batch_size)


@pytest.mark.slow
def test_model_state_survives_checkpoint_and_resume(tmp_path):

    config = _test_config(num_epochs=2, **RESNET)
    whole = train.train_and_evaluate(config, str(tmp_path / "whole"))

    config.num_epochs = 1
    first = train.train_and_evaluate(config, str(tmp_path / "resumed"))
    restored = train.train_and_evaluate(config, str(tmp_path / "resumed"))  # trains nothing
    assert set(restored.model_state) == {"batch_stats"}
    for saved, loaded in zip(_leaves(first.model_state), _leaves(restored.model_state)):
        np.testing.assert_array_equal(loaded, saved)
    fresh = train.create_train_state(config, jax.random.key(0), steps_per_epoch=4)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(_leaves(fresh.model_state), _leaves(restored.model_state))
    )

    config.num_epochs = 2
    resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert deterministic(read_metrics(tmp_path / "resumed")) == deterministic(
        read_metrics(tmp_path / "whole")
    )
    for expected, actual in zip(_leaves(whole.model_state), _leaves(resumed.model_state)):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.slow
def test_tfds_mnist_in_process(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(input_pipeline, "network_available", lambda: True)
    config = _test_config(dataset="mnist", batch_size=32)
    with tfds.testing.mock_data(num_examples=100):
        train.train_and_evaluate(config, str(tmp_path))
    (record,) = read_metrics(tmp_path)
    assert record["examples_per_second"] > 0 and record["epoch"] == 1
