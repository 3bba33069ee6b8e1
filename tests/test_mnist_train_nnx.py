"""examples/mnist with the MLP written in Flax NNX (``config.flax_api = 'nnx'``, train_nnx.py).

Two tests start ``python examples/mnist/main.py`` in a subprocess, as a user
would: the documented command (``configs/test.py`` with
``--config.flax_api=nnx``: main.py sends it to train_nnx.py) and a run killed
mid-save and resumed. Everything else calls ``train_nnx.train_and_evaluate``
in-process.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import (
    assert_tensorboard_scalars,
    assert_trees_close,
    log_lines,
    read_metrics,
    snapshot,
)
from test_configs import LIBRARY_FIELDS
from test_mnist_train import KILLED_AT_SAVE, MAIN, SHORT, checkpoint_steps, deterministic, run_main

from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError
from examples.mnist import models, models_nnx, train, train_nnx

NNX = "--config.flax_api=nnx"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete 3-epoch NNX run of the documented command: (workdir, returncode, stderr)."""
    workdir = tmp_path_factory.mktemp("finished") / "workdir"
    code, stderr, _ = run_main(workdir, NNX)
    return workdir, code, stderr


@pytest.fixture
def nnx_config(mnist_config):
    """configs/test.py with ``flax_api='nnx'`` and overrides."""
    return lambda **overrides: mnist_config(flax_api="nnx", **overrides)


def weights(state):
    """The model's params of a ``train_nnx`` state, as a dict of arrays."""
    return nnx.to_pure_dict(nnx.filter_state(state["model"], nnx.Param))


# --- The command line (subprocesses) ------------------------------------------


@pytest.mark.slow
def test_documented_command_trains_and_saves_everything(finished):
    """Run as with the ``test`` extra alone: no TensorFlow, so no TensorBoard summaries
    (``test_tensorboard_summaries_of_every_epoch`` checks them in-process)."""
    workdir, code, stderr = finished
    assert code == 0, stderr
    assert "NNX model 'mlp' (26,506 params)" in stderr  # the linen MLP's count
    last_line = stderr.strip().splitlines()[-1]
    assert "Final test accuracy: " in last_line and "after 3 epochs" in last_line

    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for record in records:
        assert len(record["energy_per_step"]) == 4 + 1
        assert set(record["node_energies"]) == {"nodes/0", "nodes/1"}  # the nodes' paths
        assert np.all(np.diff(record["energy_per_step"]) < 0)  # inference lowers the energy
    assert records[-1]["test_accuracy"] > 0.5  # the synthetic classes are learnable
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert f"{100 * records[-1]['test_accuracy']:.2f}%" in last_line

    assert checkpoint_steps(workdir) == [2, 3]  # checkpoints_to_keep = 2
    assert json.loads((workdir / "config.json").read_text())["flax_api"] == "nnx"
    assert "No TensorBoard summaries" in stderr
    assert not list(workdir.glob("events.out.tfevents.*"))
    png = (workdir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.tensorflow
@pytest.mark.slow  # a run of the example
def test_tensorboard_summaries_of_every_epoch(nnx_config, tmp_path):
    """With TensorFlow, an NNX run writes each epoch's record as scalars, its nodes' too."""
    train_nnx.train_and_evaluate(nnx_config(**{**SHORT, "num_epochs": 2}), str(tmp_path))
    records = read_metrics(tmp_path)
    scalars = {
        "test_accuracy": [r["test_accuracy"] for r in records],
        "node_energies/nodes/1": [r["node_energies"]["nodes/1"] for r in records],
    }
    assert [r["epoch"] for r in records] == [1, 2]
    assert_tensorboard_scalars(tmp_path, scalars)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(finished, tmp_path):
    workdir = tmp_path / "workdir"
    code, stderr, _ = run_main(workdir, NNX, script=KILLED_AT_SAVE.format(main=MAIN, epoch=2))
    assert code == -9, stderr
    assert [r["epoch"] for r in read_metrics(workdir)] == [1, 2]  # epoch 2: no checkpoint yet
    assert checkpoint_steps(workdir) == [1]

    code, stderr, _ = run_main(workdir, NNX)
    assert code == 0, stderr
    assert "Resuming from epoch 1 of 3" in stderr
    assert deterministic(read_metrics(workdir)) == deterministic(read_metrics(finished[0]))


# --- In-process ------------------------------------------------------------------


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing(finished_copy, nnx_config, caplog):
    caplog.set_level("INFO")
    before = read_metrics(finished_copy)
    state = train_nnx.train_and_evaluate(nnx_config(), str(finished_copy))
    assert int(jnp.asarray(state["optimizer"]["step"][...])) == 3 * 512 // 64
    assert "Resuming from epoch 3 of 3." in log_lines(caplog)
    assert read_metrics(finished_copy) == before


@pytest.mark.slow
def test_resume_continues_the_dropout_masks_and_node_draws(nnx_config, tmp_path):
    """The model's RNG state (nnx.Dropout's stream) is in the checkpoint: a resumed run with
    dropout and value_init='normal' ends exactly where an uninterrupted one ends."""
    overrides = {**SHORT, "dropout_rate": 0.25, "value_init": "normal", "num_epochs": 2}
    whole = train_nnx.train_and_evaluate(nnx_config(**overrides), str(tmp_path / "whole"))
    train_nnx.train_and_evaluate(
        nnx_config(**{**overrides, "num_epochs": 1}), str(tmp_path / "resumed")
    )
    resumed = train_nnx.train_and_evaluate(nnx_config(**overrides), str(tmp_path / "resumed"))
    assert deterministic(read_metrics(tmp_path / "resumed")) == deterministic(
        read_metrics(tmp_path / "whole")
    )
    assert_trees_close(weights(resumed), weights(whole), rtol=0, atol=0)
    count = resumed["model"]["dropout"]["rngs"]["count"][...]
    assert int(jnp.asarray(count)) == 2 * 128 // 64  # one advance per step: a new mask per batch


@pytest.mark.slow
def test_batch_loop_gives_the_epoch_loops_result(nnx_config, tmp_path):
    """``loop='batch'`` (an nnx.jit step) draws the batches and keys of the ``lax.scan`` loop."""
    states, records = {}, {}
    for loop in ("epoch", "batch"):
        config = nnx_config(**SHORT, loop=loop, dropout_rate=0.25, value_init="normal")
        states[loop] = train_nnx.train_and_evaluate(config, str(tmp_path / loop))
        records[loop] = deterministic(read_metrics(tmp_path / loop))
    assert_trees_close(records["batch"], records["epoch"], rtol=1e-4, atol=1e-4)
    assert_trees_close(weights(states["batch"]), weights(states["epoch"]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm": "ipc", "output_energy": "cross_entropy", "value_init": "zeros"},
        {"algorithm": "bp", "optimizer": "adamw", "weight_decay": 1e-4, "lr_schedule": "cosine"},
        {"latent": "error", "tolerance": 1e-3, "inference_steps": 50, "node_learning_rate": 0.2},
        {"nudging": 0.5, "node_momentum": 0.5},
    ],
    ids=["ipc-cross-entropy-zeros", "bp-adamw-cosine", "epc-tolerance", "nudging-momentum"],
)
def test_variants_train_in_process(overrides, nnx_config, tmp_path):
    train_nnx.train_and_evaluate(nnx_config(**SHORT, **overrides), str(tmp_path))
    (record,) = read_metrics(tmp_path)
    assert np.isfinite(record["train_energy"]) and record["test_accuracy"] > 0
    if overrides.get("algorithm") == "bp":
        assert record["inference_steps"] == 0
    if "tolerance" in overrides:
        assert 1 <= record["inference_steps"] < 50  # stopped at the tolerance
        assert len(record["energy_per_step"]) == 2  # before and after inference


@pytest.mark.slow
def test_init_checkpoint_starts_from_another_nnx_runs_model(finished, nnx_config, caplog):
    caplog.set_level("INFO")
    source = read_metrics(finished[0])[-1]["test_accuracy"]
    workdir = finished[0].parent / "fine_tuned"
    config = nnx_config(num_epochs=1, init_checkpoint=str(finished[0]))
    state = train_nnx.train_and_evaluate(config, str(workdir))
    start = [line for line in log_lines(caplog) if line.startswith("Starting from the weights")]
    assert start and f"test accuracy {100 * source:.2f}% before training" in start[0]
    assert int(jnp.asarray(state["optimizer"]["step"][...])) == 512 // 64  # a fresh optimizer


def _linen_workdir(mnist_config, tmp_path):
    """A workdir of a finished linen run (one short epoch)."""
    workdir = tmp_path / "linen"
    train.train_and_evaluate(mnist_config(**SHORT), str(workdir))
    return workdir


# name: (config overrides, the error, its words)
BAD_INPUTS = {
    "another model": ({"model": "cnn"}, ConfigError, "flax_api = 'nnx' trains model 'mlp' only"),
    "a bad linen field": ({"hidden_sizes": (32, 0)}, ConfigError, "config.hidden_sizes"),
    **{
        f"library field {field}={value}": ({field: value}, ConfigError, message)
        for field, value, message in LIBRARY_FIELDS
    },
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_changes_nothing(case, nnx_config, tmp_path):
    overrides, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message) as raised:
        train_nnx.train_and_evaluate(nnx_config(**overrides), str(tmp_path / "new"))
    assert isinstance(raised.value, workdir_lib.UserError) and "\n" not in str(raised.value)
    assert not (tmp_path / "new").exists()


def test_train_py_refuses_an_nnx_config(nnx_config, tmp_path):
    """In-process callers of train.py cannot train the linen model under an NNX config."""
    with pytest.raises(ConfigError, match="config.flax_api = 'nnx' runs in train_nnx.py"):
        train.train_and_evaluate(nnx_config(), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_workdir_holds_one_api(mnist_config, nnx_config, tmp_path):
    """An NNX run refuses a linen run's workdir, and the reverse."""
    linen = _linen_workdir(mnist_config, tmp_path)
    before = snapshot(linen)
    with pytest.raises(workdir_lib.WorkdirError, match="flax_api = 'linen', this config has 'nnx'"):
        train_nnx.train_and_evaluate(nnx_config(**{**SHORT, "num_epochs": 2}), str(linen))
    assert snapshot(linen) == before

    nnx_workdir = tmp_path / "nnx"
    train_nnx.train_and_evaluate(nnx_config(**SHORT), str(nnx_workdir))
    with pytest.raises(workdir_lib.WorkdirError, match="flax_api = 'nnx', this config has 'linen'"):
        train.train_and_evaluate(mnist_config(**{**SHORT, "num_epochs": 2}), str(nnx_workdir))


def test_nnx_mlp_is_the_linen_mlp():
    """With the linen MLP's weights copied in, the NNX MLP computes the same function."""
    linen = models.MLP(hidden_sizes=(16, 8))
    images = jax.random.uniform(jax.random.key(0), (5, 28, 28, 1))
    params = linen.init(jax.random.key(1), images, train=False)["params"]
    model = models_nnx.MLP(784, (16, 8), rngs=nnx.Rngs(2))
    layers = {"hidden": {0: params["Dense_0"], 1: params["Dense_1"]}, "out": params["Dense_2"]}
    nnx.update(model, nnx.State(layers))
    expected = jnp.asarray(linen.apply({"params": params}, images, train=False))
    np.testing.assert_allclose(model(images), expected, rtol=1e-6, atol=1e-6)
    # And the default initialisers are nn.Dense's: the same distribution of weights.
    fresh = models_nnx.MLP(784, (128,), rngs=nnx.Rngs(0))
    first = fresh.hidden[0]
    assert first.bias is not None
    assert jnp.std(jnp.asarray(first.kernel[...])) == pytest.approx(1 / np.sqrt(784), rel=0.02)
    assert not np.any(jnp.asarray(first.bias[...]))
