"""examples/generative end to end (the documented command, resume, bad inputs) and its configs.

One test runs the documented command, ``python examples/generative/main.py
--config=configs/generative_test.py`` (tiny, synthetic data), in a
subprocess, as a user would; the others call ``train`` in-process.
"""

import importlib
import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import assert_trees_close, log_lines, read_metrics, snapshot

import flax_pc as fpc
from examples.common import input_pipeline
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError
from examples.generative import models, train

ROOT = pathlib.Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "generative"
MAIN = "examples/generative/main.py"
CONFIGS = ("generative", "generative_test", "generative_mcpc")
METRICS = (
    "train_energy",
    "test_mse",
    "masked_mse",
    "mean_image_mse",
    "denoised_mse",
    "noisy_mse",
    "latent_mean_square",
    "seconds",
    "examples_per_second",
)


def load_config(name: str):
    return importlib.import_module(f"configs.{name}").get_config()


def run_main(workdir, *flags, config="configs/generative_test.py"):
    """Runs the example; returns (returncode, stderr)."""
    cmd = [sys.executable, MAIN, f"--config={config}", f"--workdir={workdir}", *flags]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr


# --- Configs -------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_every_field_is_documented(name):
    config = load_config(name)
    train.validate_config(config)
    assert set(config.keys()) == set(load_config("generative").keys())
    lines = (ROOT / "configs" / f"{name}.py").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s+config\.\w+ = ", line):
            documented = lines[number - 1].strip().startswith("#")
            assert documented, f"{name}.py:{number + 1} has no comment: {line.strip()}"


def test_default_config_is_fashion_mnist_with_bernoulli_output():
    config = load_config("generative")
    assert (config.dataset, config.output_energy) == ("fashion_mnist", "bernoulli")
    assert config.eval_size == 1000


BAD_FIELDS = [
    ("dataset", "cifar10", "expected one of"),
    ("data_dir", 3, "expected a path"),
    ("synthetic_train_size", 0, "int > 0"),
    ("latent_size", 0, "int > 0"),
    ("latent_size", 2.0, "int > 0"),
    ("hidden_sizes", (64, 0), "tuple of ints > 0"),
    ("hidden_sizes", 64, "tuple of ints > 0"),
    ("activation", "swish2", "expected one of"),
    ("output_energy", "cross_entropy", "expected one of"),
    ("node_learning_rate", 0.0, "number > 0"),
    ("node_learning_rate", float("nan"), "number > 0"),
    ("node_momentum", 1.0, r"\[0, 1\)"),
    ("learning_rate", -1e-3, "number > 0"),
    ("weight_decay", -0.1, "number >= 0"),
    ("weight_decay", float("nan"), "number >= 0"),
    ("batch_size", True, "int > 0"),
    ("num_epochs", 0, "int > 0"),
    ("seed", -1, "int >= 0"),
    ("checkpoints_to_keep", 0, "int > 0"),
    ("eval_size", 0, "int > 0"),
    ("eval_inference_steps", 0, "int > 0"),
    ("noise_stddev", -0.1, "number >= 0"),
    ("noise_stddev", float("inf"), "number >= 0"),
    ("grid_columns", 0, "int > 0"),
    ("grid_columns", 2000, "larger than config.eval_size = 1000"),
    ("node_optimizer", "adam", "expected one of"),
    ("temperature", -1.0, "number >= 0"),
    ("hidden_nodes", 1, "True or False"),
    ("score_samples", 0, "int > 0"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_bad_field_is_one_line(field, value, message):
    # A new ConfigDict: the loaded one refuses values of another type.
    config = ml_collections.ConfigDict({**load_config("generative").to_dict(), field: value})
    with pytest.raises(ConfigError, match=message) as error:
        train.validate_config(config)
    assert str(error.value).startswith(f"config.{field}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("weight_decay", [0.0, 1.0])
def test_weight_decay_shrinks_the_weights_by_learning_rate_times_decay(
    weight_decay, generative_config
):
    config = generative_config(learning_rate=1e-2, weight_decay=weight_decay)
    state = train.create_train_state(config, jax.random.key(0))
    # Zero gradients: Adam's own step is 0, so only the decay moves the weights.
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    new = state.apply_gradients(grads=zeros)
    factor = 1 - config.learning_rate * weight_decay
    assert_trees_close(new.params, jax.tree.map(lambda p: p * factor, state.params), rtol=1e-6)


# --- Model ---------------------------------------------------------------------


def test_decode_is_the_feed_forward_pass_from_the_latent(generative_config):
    config = generative_config()
    model = train.create_model(config)
    prior = models.prior_mean(model, 3)
    params = model.init(jax.random.key(0), prior)["params"]
    z = jax.random.normal(jax.random.key(1), prior.shape)

    # By hand: Dense on z, then tanh -> Dense per further layer; Bernoulli logits to pixels.
    def dense(h, i):
        layer = params[f"Dense_{i}"]
        return h @ jnp.asarray(layer["kernel"]) + jnp.asarray(layer["bias"])

    h = dense(z, 0)
    for i in range(1, len(config.hidden_sizes) + 1):
        h = dense(jnp.tanh(h), i)
    expected = 1 / (1 + jnp.exp(-h))
    decoded = models.decode(model, params, z)
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-5)
    # The prior mean (zeros) is the latent's prediction: its energy is ½‖z‖².
    nodes = fpc.init_nodes(model.apply, params, prior)
    nodes["latent"]["value"] = z
    energies = fpc.energy(model.apply, params, nodes, prior, jnp.zeros((3, 784)))
    np.testing.assert_allclose(
        fpc.node_energies(energies.nodes)["latent"], 0.5 * jnp.sum(z**2, -1), rtol=1e-5
    )


def test_prior_samples_differ_and_are_images(generative_config):
    config = generative_config()
    model = train.create_model(config)
    params = model.init(jax.random.key(0), models.prior_mean(model, 1))
    samples = models.sample(model, params["params"], jax.random.key(1), 4)
    assert samples.shape == (4, 784)
    assert float(jnp.min(samples)) >= 0 and float(jnp.max(samples)) <= 1
    assert float(jnp.std(samples[0] - samples[1])) > 0


# --- End to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete run of the documented command: (workdir, returncode, stderr)."""
    workdir = tmp_path_factory.mktemp("generative") / "workdir"
    code, stderr = run_main(workdir)
    return workdir, code, stderr


@pytest.mark.slow
def test_documented_command_trains_and_saves_everything(finished, generative_config):
    workdir, code, stderr = finished
    assert code == 0, stderr
    config = generative_config()
    epochs = config.num_epochs
    last_line = stderr.strip().splitlines()[-1]
    assert "Final held-out reconstruction MSE" in last_line, last_line
    assert "for the mean image" in last_line and f"after {epochs} epochs" in last_line
    assert f"epoch {epochs}/{epochs}: train energy" in stderr

    records = read_metrics(workdir)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for record in records:
        for key in METRICS:
            assert isinstance(record[key], float) and np.isfinite(record[key]), key
        assert len(record["energy_per_step"]) == config.inference_steps + 1
        assert set(record["node_energies"]) == {"latent", "hidden_0"}
    assert records[-1]["test_mse"] < 0.8 * records[0]["test_mse"]
    assert records[-1]["train_energy"] < records[0]["train_energy"]
    assert f"{records[-1]['test_mse']:.4f}" in last_line

    saved = json.loads((workdir / "config.json").read_text())
    assert saved["dataset"] == "synthetic" and saved["hidden_sizes"] == [32]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        str(epochs - 1),
        str(epochs),
    ]
    for name in ("samples.png", "curves.png", "generated.png"):
        png = (workdir / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    scores = json.loads((workdir / "scores.json").read_text())
    assert scores["num_samples"] == config.score_samples
    assert f"{config.score_samples} samples, scored by a backprop classifier" in stderr
    # Run as with the `test` extra alone (tests/conftest.py): no TensorFlow, no summaries.
    assert "No TensorBoard summaries" in stderr
    assert not list(workdir.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_nothing(finished_copy, generative_config, caplog):
    caplog.set_level("INFO")
    before = read_metrics(finished_copy)
    train.train_and_evaluate(generative_config(), str(finished_copy))
    log = "\n".join(log_lines(caplog))
    assert f"Resuming from epoch {len(before)} of {len(before)}" in log
    assert read_metrics(finished_copy) == before
    assert f"Final held-out reconstruction MSE {before[-1]['test_mse']:.4f}" in log


@pytest.mark.slow
def test_resumed_run_trains_only_the_new_epochs(finished_copy, generative_config, caplog):
    caplog.set_level("INFO")
    before = read_metrics(finished_copy)
    epochs = len(before) + 1
    train.train_and_evaluate(generative_config(num_epochs=epochs), str(finished_copy))
    log = "\n".join(log_lines(caplog))
    assert f"Resuming from epoch {len(before)} of {epochs}" in log
    after = read_metrics(finished_copy)
    assert after[:-1] == before and after[-1]["epoch"] == epochs
    assert f"epoch {epochs}/{epochs}: train energy" in log


# name: (config overrides, the error, its words)
BAD_INPUTS = {
    "unknown output energy": (
        {"output_energy": "hinge"}, ConfigError, "config.output_energy = 'hinge'"
    ),
    "eval_size larger than the test set": (
        {"eval_size": 1000},
        ConfigError,
        r"config.eval_size = 1000 is larger than the test set \(128 examples\)",
    ),
    "data_dir without files": (
        {"dataset": "fashion_mnist", "data_dir": "{tmp}"},
        input_pipeline.DataError,
        "lacks train-images-idx3-ubyte.gz",
    ),
    "a library error": (
        {"inference_steps": -1}, ConfigError, "Inference: steps must be >= 0"
    ),
    "incompatible workdir": (
        {"latent_size": 4},
        workdir_lib.WorkdirError,
        "holds a run with latent_size = 8, this config has 4",
    ),
}  # fmt: skip


def _in_finished_workdir(case):
    # The finished workdir is the documented command's run: a subprocess, slow.
    return [pytest.mark.slow] if case == "incompatible workdir" else []


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=_in_finished_workdir(case)) for case in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_changes_nothing(case, generative_config, request, tmp_path):
    overrides, error, message = BAD_INPUTS[case]
    overrides = {
        k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()
    }
    finished = request.getfixturevalue("finished_copy") if _in_finished_workdir(case) else None
    before = snapshot(finished) if finished else None
    workdir = finished or tmp_path / "new"
    with pytest.raises(error, match=message) as raised:
        train.train_and_evaluate(generative_config(**overrides), str(workdir))
    assert isinstance(raised.value, workdir_lib.UserError)  # main.py prints "Error: ..."
    assert "\n" not in str(raised.value)
    if finished:
        assert snapshot(finished) == before
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, other", [("latent_size", 4), ("hidden_nodes", False), ("temperature", 0.5)]
)
def test_a_resume_that_changes_the_config_is_refused(field, other, finished, generative_config):
    workdir = finished[0]
    before = snapshot(workdir)
    saved = generative_config()[field]
    with pytest.raises(workdir_lib.WorkdirError) as raised:
        train.train_and_evaluate(generative_config(**{field: other}), str(workdir))
    assert f"holds a run with {field} = {saved!r}, this config has {other!r};" in str(raised.value)
    assert snapshot(workdir) == before
