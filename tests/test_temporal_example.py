"""examples/temporal: its Kalman filter, sequence memory on tiny data, the command, the config."""

import helpers
import numpy as np
import pytest

from configs import tpc as tpc_config
from examples.temporal import models, train


def test_the_kalman_filter_of_a_scalar_system_is_the_textbook_recursion():
    a, q, r = 0.9, 0.5, 0.2
    ys = np.random.default_rng(0).normal(size=(6, 1))
    means = models.kalman_filter(np.array([[a]]), np.array([[1.0]]), ys, q, r)
    mean, variance = 0.0, 0.0
    for t, y in enumerate(ys[:, 0]):
        prior = a * a * variance + q
        gain = prior / (prior + r)
        mean = a * mean + gain * (y - a * mean)
        variance = (1 - gain) * prior
        np.testing.assert_allclose(means[t, 0], mean, rtol=1e-12)


def test_a_two_layer_tpc_recalls_a_sequence_with_repeats_from_its_initial_latent():
    # 6 frames of 4 random patterns: patterns 0 and 1 come twice, with different successors.
    patterns = (np.random.default_rng(1).random((4, 64)) > 0.6).astype(np.float32)
    order = np.array([0, 1, 2, 0, 3, 1])
    config = helpers.with_overrides(tpc_config.get_config(), {"hidden_size": 64})
    recalled, energy = train.memorise(config, patterns[order], epochs=300)
    error = np.mean((recalled - patterns[order]) ** 2, axis=-1)
    assert np.all(error < 0.01), error
    # Each recalled frame is nearest its own pattern.
    distances = np.mean((recalled[:, None] - patterns[None]) ** 2, axis=-1)
    np.testing.assert_array_equal(np.argmin(distances, axis=1), order)
    assert energy < 0.1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("damping", 1.5, "a number in (0, 1]"),
        ("observation_size", 1, "an int >= 2"),
        ("long_sequence_length", 25, "a multiple of 10"),
        ("process_noise", 0.0, "a number > 0"),
        ("dataset", "cifar10", "expected one of"),
    ],
)
def test_bad_fields_are_one_line_errors(field, value, message):
    helpers.assert_config_error(
        train.validate_config, tpc_config.get_config(), field, value, message
    )


def test_config_validates_and_every_field_is_documented():
    train.validate_config(tpc_config.get_config())
    helpers.assert_fields_commented("configs/tpc.py")


@pytest.mark.slow  # a subprocess: the end-to-end run of the example
def test_the_documented_command_on_tiny_synthetic_data(tmp_path):
    flags = [
        "--config.dataset=synthetic", "--config.synthetic_train_size=256",
        "--config.synthetic_test_size=64", "--config.train_length=100",
        "--config.test_length=50", "--config.tracking_epochs=1", "--config.hidden_size=16",
        "--config.inference_steps=5", "--config.sequence_epochs=2",
        "--config.long_sequence_length=20", "--config.long_sequence_epochs=2",
    ]  # fmt: skip
    result = helpers.run_example("examples/temporal/main.py", "configs/tpc.py", tmp_path, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    tracking, short, long = helpers.read_metrics(tmp_path)
    assert tracking["task"] == "tracking"
    assert tracking["tpc_mse"] > 0 and tracking["kalman_mse"] > 0
    assert (short["frames"], long["frames"]) == (10, 20)
    for record in (short, long):
        assert 0.0 <= record["recall_correct"] <= 1.0
        assert len(record["recall_mse"]) == record["frames"]
    for picture in ("tracking.png", "recall.png", "recall_long.png"):
        assert (tmp_path / picture).stat().st_size > 0
