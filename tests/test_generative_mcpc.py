"""examples/generative's MCPC option, its ancestral samples and the sample scores.

The scores are checked against hand computations, the samples against the
model's closed-form distribution (a linear decoder), and a tiny synthetic MCPC
run writes its scores.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import flax_pc as fpc
from examples.common import input_pipeline
from examples.common.workdir import ConfigError
from examples.generative import models, scores, train

# --- Scores ----------------------------------------------------------------------


def test_confident_share_and_label_entropy_by_hand():
    probabilities = np.array(
        [
            [0.95, 0.05, 0.0],  # confident, label 0
            [0.9, 0.1, 0.0],  # confident (>= 0.9), label 0
            [0.5, 0.4, 0.1],  # label 0
            [0.2, 0.7, 0.1],  # label 1
        ]
    )
    assert scores.confident_share(probabilities) == 0.5
    # Labels 0, 0, 0, 1: frequencies 3/4 and 1/4.
    expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    np.testing.assert_allclose(scores.label_entropy(probabilities), expected, rtol=1e-12)
    # One label for all: no diversity; every label as often: ln(classes).
    assert scores.label_entropy(np.eye(3)[[1, 1, 1]]) == 0.0
    np.testing.assert_allclose(scores.label_entropy(np.eye(3)), np.log(3), rtol=1e-12)


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 1.5]])
    # The same set: 0. Shifted by c: |c|^2. Scaled by 2 about its mean: tr(C + 4C - 4C) = tr(C).
    assert abs(scores.frechet_distance(a, a)) < 1e-9
    shift = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(scores.frechet_distance(a, a + shift), 5.25, rtol=1e-9)
    scaled = 2 * (a - a.mean(0)) + a.mean(0)
    np.testing.assert_allclose(scores.frechet_distance(a, scaled), np.trace(np.cov(a.T)), rtol=1e-9)
    # Two other sets, against the formula with scipy's matrix square root.
    b = rng.normal(size=(400, 3)) + 0.3
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(
        cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    )
    np.testing.assert_allclose(scores.frechet_distance(a, b), expected, rtol=1e-9)


def test_the_classifier_learns_the_synthetic_classes():
    splits = input_pipeline.synthetic(512, 256)
    params = scores.train_classifier(splits.train_images, splits.train_labels)
    assert scores.accuracy(params, splits.test_images, splits.test_labels) > 0.8
    result = scores.sample_scores(params, splits.test_images, splits.test_images)
    assert result["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert 2.0 < result["label_entropy"] <= np.log(10)


# --- Ancestral samples -----------------------------------------------------------


@pytest.mark.parametrize("hidden_nodes", [True, False])
def test_ancestral_samples_have_the_models_distribution(hidden_nodes):
    """A linear decoder z -> h -> x: x = (z K1 + b1 + e) K2 + b2, z ~ N(0, I), e ~ N(0, I)."""
    model = models.Decoder(
        latent_size=2, hidden_sizes=(3,), image_size=4, act=lambda h: h, to_image=lambda x: x,
        hidden_nodes=hidden_nodes,
    )  # fmt: skip
    params = model.init(jax.random.key(0), models.prior_mean(model, 1))["params"]
    params["Dense_0"]["bias"] = jnp.array([0.5, -1.0, 0.2])
    k1, k2 = (np.asarray(params[f"Dense_{i}"]["kernel"], np.float64) for i in (0, 1))
    samples = np.asarray(models.sample(model, params, jax.random.key(1), 40_000), np.float64)
    hidden_covariance = k1.T @ k1 + (np.eye(3) if hidden_nodes else 0)
    covariance = k2.T @ hidden_covariance @ k2
    mean = np.asarray(params["Dense_0"]["bias"]) @ k2 + np.asarray(params["Dense_1"]["bias"])
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.05 * np.abs(covariance).max())


# --- The MCPC option -------------------------------------------------------------


def test_langevin_inference_draws_noise_from_the_key(generative_config):
    config = generative_config(node_optimizer="langevin", node_momentum=0.0)
    train.validate_config(config)
    state = train.create_train_state(config, jax.random.key(0))
    inputs = jnp.zeros((8, config.latent_size))
    targets = jax.random.uniform(jax.random.key(1), (8, 784))
    step = jax.jit(lambda s, key: s.train_step(inputs, targets, rng=key))
    params = [step(state, jax.random.key(k))[0].params for k in (2, 2, 3)]
    kernel = [np.asarray(p["Dense_0"]["kernel"]) for p in params]
    np.testing.assert_array_equal(kernel[0], kernel[1])  # the same key: the same samples
    assert not np.allclose(kernel[0], kernel[2])  # another key: others
    # SGD ignores the key.
    sgd = train.create_train_state(generative_config(), jax.random.key(0))
    kernel = [step(sgd, jax.random.key(k))[0].params for k in (2, 3)]
    np.testing.assert_array_equal(kernel[0]["Dense_0"]["kernel"], kernel[1]["Dense_0"]["kernel"])


def test_langevin_takes_no_momentum(generative_config):
    config = generative_config(node_optimizer="langevin")  # generative.py's momentum 0.7
    with pytest.raises(ConfigError, match="config.node_momentum = 0.7 needs config.node_optim"):
        train.validate_config(config)


def test_without_hidden_nodes_the_latent_is_the_only_node(generative_config):
    config = generative_config(hidden_nodes=False)
    model = train.create_model(config)
    prior = models.prior_mean(model, 2)
    params = model.init(jax.random.key(0), prior)["params"]
    assert set(fpc.init_nodes(model.apply, params, prior)) == {models.LATENT}


@pytest.mark.slow  # two runs of the example
def test_mcpc_run_writes_its_scores_and_a_rerun_reuses_the_classifier(generative_config, tmp_path):
    config = generative_config(
        node_optimizer="langevin", node_momentum=0.0, hidden_nodes=False, num_epochs=2
    )
    train.train_and_evaluate(config, str(tmp_path))
    result = json.loads((tmp_path / "scores.json").read_text())
    assert (result["sampler"], result["num_samples"]) == ("ancestral", config.score_samples)
    assert result["classifier_test_accuracy"] > 0.8
    for key in ("samples", "training_images"):
        assert set(result[key]) == {"confident", "label_entropy", "frechet_distance"}
        assert 0 <= result[key]["confident"] <= 1
        assert 0 <= result[key]["label_entropy"] <= np.log(10) + 1e-9
        assert result[key]["frechet_distance"] >= 0
    assert (tmp_path / "generated.png").stat().st_size > 0
    classifier = (tmp_path / scores.CLASSIFIER_FILE).read_bytes()
    train.train_and_evaluate(config, str(tmp_path))  # finished: nothing trains, scores again
    assert (tmp_path / scores.CLASSIFIER_FILE).read_bytes() == classifier
    assert json.loads((tmp_path / "scores.json").read_text()) == result
