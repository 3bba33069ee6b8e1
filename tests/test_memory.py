"""examples/memory: the Hopfield baselines against their rules, PC retrieval, the command.

The baselines are checked against the rules written loop by loop in NumPy; PC
storage and retrieval on a few random patterns made here; the documented
command runs once on tiny synthetic data.
"""

import helpers
import jax.numpy as jnp
import numpy as np
import pytest

from configs import memory as memory_config
from examples.memory import models, train


def storkey_loops(patterns):
    """The Storkey rule, one weight at a time (Storkey, 1997)."""
    n = patterns.shape[1]
    w = np.zeros((n, n))
    for xi in patterns:
        # h[i, j] = sum over k != i, j of w_ik xi_k, with the weights before this pattern.
        h = np.array(
            [[sum(w[i, k] * xi[k] for k in range(n) if k not in (i, j)) for j in range(n)]
             for i in range(n)]
        )  # fmt: skip
        for i in range(n):
            for j in range(n):
                if i != j:
                    w[i, j] += (xi[i] * xi[j] - xi[i] * h[j, i] - h[i, j] * xi[j]) / n
    return w


def test_storkey_weights_follow_the_rule():
    patterns = np.where(np.random.default_rng(0).random((3, 7)) > 0.5, 1.0, -1.0)
    np.testing.assert_allclose(
        models.storkey_weights(jnp.asarray(patterns, jnp.float32)), storkey_loops(patterns),
        atol=1e-6,
    )  # fmt: skip


def test_hopfield_retrieval_updates_one_unit_at_a_time():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(6, 6))
    weights = (weights + weights.T) * (1 - np.eye(6))
    states = np.where(rng.random((3, 6)) > 0.5, 1.0, -1.0)
    expected = states.copy()
    for _ in range(2):
        for i in range(6):
            expected[:, i] = np.where(expected @ weights[:, i] >= 0, 1.0, -1.0)
    retrieved = models.hopfield_retrieve(
        jnp.asarray(weights, jnp.float32), jnp.asarray(states, jnp.float32), 2
    )
    np.testing.assert_array_equal(retrieved, expected)


def test_a_hopfield_network_corrects_flipped_units_of_a_stored_pattern():
    patterns = np.where(np.random.default_rng(2).random((3, 64)) > 0.5, 1.0, -1.0)
    weights = models.storkey_weights(jnp.asarray(patterns, jnp.float32))
    corrupted = patterns.copy()
    corrupted[:, :6] *= -1
    retrieved = models.hopfield_retrieve(weights, jnp.asarray(corrupted, jnp.float32), 3)
    np.testing.assert_array_equal(retrieved, patterns)


def test_modern_hopfield_network_is_a_softmax_over_similarities():
    rng = np.random.default_rng(3)
    memories, cues = rng.random((5, 8)), rng.random((2, 8))
    scores = 0.7 * cues @ memories.T
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ memories
    retrieved = models.modern_hopfield_retrieve(
        jnp.asarray(memories, jnp.float32), jnp.asarray(cues, jnp.float32), 0.7
    )
    np.testing.assert_allclose(retrieved, expected, rtol=1e-5)
    # A large beta retrieves the most similar memory alone.
    sharp = models.modern_hopfield_retrieve(jnp.asarray(memories), jnp.asarray(cues), 1e4)
    np.testing.assert_allclose(sharp, memories[np.argmax(cues @ memories.T, -1)], atol=1e-5)


def tiny_config(**overrides):
    return helpers.with_overrides(memory_config.get_config(), overrides)


def test_a_pc_network_retrieves_stored_patterns_from_half_of_them_and_from_noise():
    # 8 random binary patterns of 64 pixels: the first 32 pixels identify each one.
    images = (np.random.default_rng(4).random((8, 64)) > 0.7).astype(np.float32)
    config = tiny_config(
        latent_size=8, hidden_size=64, epochs=1000, learning_rate=3e-3, noise_stddev=0.2,
        retrieval_steps=300, retrieval_node_learning_rate=0.05,
    )  # fmt: skip
    state, _ = train.store(config, jnp.asarray(images))
    for name, (cue, mask) in train.cues(config, images).items():
        retrieved = train.retrieve(config, state, cue, mask)
        # Each retrieval is nearest its own pattern, and most are within the threshold.
        distances = np.mean((retrieved[:, None] - images[None]) ** 2, axis=-1)
        np.testing.assert_array_equal(np.argmin(distances, axis=1), np.arange(8), err_msg=name)
        error = train.errors(retrieved, images)
        assert np.median(error) < config.threshold, (name, error)
        # The retrieval is better than the cue (whose unknown half is 0, or noisy).
        assert np.all(error < train.errors(cue, images)), name


def test_config_validates_and_every_field_is_documented():
    config = memory_config.get_config()
    train.validate_config(config)
    helpers.assert_fields_commented("configs/memory.py")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("memories", (50, 0), "a non-empty tuple of ints > 0"),
        ("threshold", 0.0, "a number > 0"),
        ("noise_stddev", -0.1, "a number >= 0"),
        ("dataset", "cifar10", "expected one of"),
    ],
)
def test_bad_fields_are_one_line_errors(field, value, message):
    helpers.assert_config_error(
        train.validate_config, memory_config.get_config(), field, value, message
    )


@pytest.mark.slow  # a subprocess: the end-to-end run of the example
def test_the_documented_command_on_tiny_synthetic_data(tmp_path):
    flags = [
        "--config.dataset=synthetic", "--config.synthetic_train_size=64",
        "--config.memories=(8,16)", "--config.epochs=20", "--config.hidden_size=32",
        "--config.retrieval_steps=10", "--config.hopfield_sweeps=2",
    ]  # fmt: skip
    result = helpers.run_example("examples/memory/main.py", "configs/memory.py", tmp_path, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    records = helpers.read_metrics(tmp_path)
    assert [r["memories"] for r in records] == [8, 16]
    for record in records:
        for key in ("retrieval_rate", "storkey_rate", "modern_hopfield_rate"):
            assert set(record[key]) == {"half_masked", "noisy"}
            assert all(0.0 <= rate <= 1.0 for rate in record[key].values())
    assert (tmp_path / "retrievals_16.png").stat().st_size > 0
    # A bad field is a one-line error, exit code 1.
    bad = helpers.run_example(
        "examples/memory/main.py", "configs/memory.py", tmp_path / "bad", "--config.threshold=-1"
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: config.threshold = -1")
