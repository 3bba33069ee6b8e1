"""examples/mnist model='flax_cnn': Flax's CNN as written, trained by PC through with_nodes,
and started from a backprop run's checkpoint (config.init_checkpoint)."""

import json

import jax
import numpy as np
import pytest

import flax_pc as fpc
from configs import flax_cnn
from configs import test as test_config
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError
from examples.mnist import models, train


def _config(**overrides):
    config = test_config.get_config()
    config.model = "flax_cnn"
    config.num_epochs = 1
    for key, value in overrides.items():
        config[key] = value
    return config


def test_the_config_validates_and_builds_flax_s_model():
    config = flax_cnn.get_config()
    train.validate_config(config)
    model = train.create_model(config)
    assert isinstance(model, models.WithNodes) and isinstance(model.model, models.FlaxCNN)
    assert model.node.keywords == {
        "value_init": "forward",
        "value_init_stddev": 1.0,
        "latent": "value",
    }
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=10)
    # The params tree is the model's own: what Flax's example would save.
    own = models.FlaxCNN().init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))["params"]
    assert jax.tree_util.tree_structure(state.params) == jax.tree_util.tree_structure(own)
    x = np.zeros((2, 28, 28, 1), np.float32)
    nodes = jax.tree_util.tree_map(np.shape, fpc.init_nodes(state.apply_fn, state.params, x))
    assert nodes == {
        "Conv_1": {"input": {"value": (2, 14, 14, 32)}},
        "Dense_0": {"input": {"value": (2, 3136)}},
        "Dense_1": {"input": {"value": (2, 256)}},
    }


def test_flax_cnn_takes_no_dropout():
    with pytest.raises(ConfigError, match="config.dropout_rate = 0.5 with model 'flax_cnn'"):
        train.validate_config(_config(dropout_rate=0.5))


def test_evaluation_is_flax_s_model_unchanged():
    config = _config()
    state = train.create_train_state(config, jax.random.key(0), steps_per_epoch=10)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    predict = train.create_model(config).apply({"params": state.params}, x, train=False)
    expected = models.FlaxCNN().apply({"params": state.params}, x)
    np.testing.assert_array_equal(predict, expected)


@pytest.mark.slow  # a run of the example
def test_bad_init_checkpoints_stop_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(workdir_lib.WorkdirError, match="init_checkpoint = .* holds no checkpoint"):
        train.train_and_evaluate(_config(init_checkpoint=str(tmp_path / "none")), str(workdir))
    assert not workdir.exists()
    other = tmp_path / "mlp"
    train.train_and_evaluate(_config(model="mlp"), str(other))
    with pytest.raises(  # another model's weights
        workdir_lib.WorkdirError,
        match="init_checkpoint = .*: its newest checkpoint does not fit this config "
        "\\(params/Conv_0/bias: absent there, \\(32,\\) here\\)",
    ):
        train.train_and_evaluate(_config(init_checkpoint=str(other)), str(workdir))
    assert not workdir.exists()


@pytest.mark.slow
def test_pc_fine_tuning_of_a_backprop_run(tmp_path, caplog):
    backprop = tmp_path / "bp"
    bp_state = train.train_and_evaluate(_config(algorithm="bp"), str(backprop))
    bp_accuracy = _last_accuracy(backprop)
    with caplog.at_level("INFO"):
        state = train.train_and_evaluate(
            _config(init_checkpoint=str(backprop)), str(tmp_path / "pc")
        )
    started = [
        r.getMessage() for r in caplog.records if "Starting from the weights" in r.getMessage()
    ]
    assert started == [
        f"Starting from the weights of {backprop} (epoch 1): test accuracy "
        f"{100 * bp_accuracy:.2f}% before training."
    ]
    # One PC epoch moved the weights away from backprop's, and the run kept
    # its own step count (a fresh optimizer).
    assert int(state.step) == int(bp_state.step)
    moved = jax.tree_util.tree_map(
        lambda a, b: float(np.abs(a - b).max()), state.params, bp_state.params
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    # Resuming the fine-tuned run does not start from the backprop weights again.
    caplog.clear()
    with caplog.at_level("INFO"):
        train.train_and_evaluate(_config(init_checkpoint=str(backprop)), str(tmp_path / "pc"))
    assert not [r for r in caplog.records if "Starting from the weights" in r.getMessage()]


def _last_accuracy(workdir):
    lines = (workdir / workdir_lib.METRICS_FILE).read_text().splitlines()
    return json.loads(lines[-1])["test_accuracy"]
