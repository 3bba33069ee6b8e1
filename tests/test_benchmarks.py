"""benchmarks/: the plain-JAX yardstick computes what flax_pc computes, and the script runs."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flax_pc as fpc
from benchmarks import models, plain_pc

STEPS = 3


def _setup(model, x, inference_steps, node_lr):
    def create(key):
        return fpc.PCTrainState.create(
            apply_fn=model.apply, params=model.init(key, x)["params"], tx=optax.adam(1e-3),
            inference=fpc.Inference(optax.sgd(node_lr), inference_steps),
        )  # fmt: skip

    # One jit (op by op, every new shape is a compile) and 'rbg' keys (XLA:CPU is slow
    # to compile threefry for many initialisers).
    state = jax.jit(create)(jax.random.key(1, impl="rbg"))
    weights = plain_pc.weights_from_flax(state.params, models.plain_names(model))
    return state, weights


def _assert_same(state, weights, model):
    expected = plain_pc.weights_from_flax(state.params, models.plain_names(model))
    for a, b in zip(jax.tree_util.tree_leaves(weights), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _compare(model, layers, x, y, inference_steps, node_lr=0.01):
    state, weights = _setup(model, x, inference_steps, node_lr)
    initial = weights
    tx = optax.adam(1e-3)
    opt_state = jax.jit(tx.init)(weights)
    flax_step = jax.jit(lambda s, x, y: s.train_step(x, y))
    # flax_pc unrolls its inference loop by default; so does the yardstick here.
    plain_step = jax.jit(plain_pc.make_pc_step(layers, tx, node_lr, inference_steps, unroll=True))
    for _ in range(STEPS):
        state, metrics = flax_step(state, x, y)
        weights, opt_state, plain_metrics = plain_step(weights, opt_state, x, y)
        np.testing.assert_allclose(metrics["energy"][-1], plain_metrics["energy"], rtol=1e-5)
    _assert_same(state, weights, model)
    # Every layer learned (the error reached the first layer within the T steps): the
    # comparison is not between untouched copies.
    for before, after in zip(initial, weights):
        assert not np.allclose(before["kernel"], after["kernel"])


def test_mlp_step_matches_plain_jax():
    x = jax.random.uniform(jax.random.key(0), (32, 784))
    y = jax.nn.one_hot(jnp.arange(32) % 10, 10)
    _compare(models.MLP(), plain_pc.mlp_layers(3), x, y, inference_steps=4)


@pytest.mark.parametrize("unroll", [False, True])
def test_plain_energy_trajectory_matches_flax_pc_metrics(unroll):
    x = jax.random.uniform(jax.random.key(0), (16, 784))
    y = jax.nn.one_hot(jnp.arange(16) % 10, 10)
    model = models.MLP()
    state, weights = _setup(model, x, inference_steps=3, node_lr=0.01)
    tx = optax.adam(1e-3)
    step = plain_pc.make_pc_step(
        plain_pc.mlp_layers(3), tx, 0.01, 3, unroll=unroll, energy_trajectory=True
    )
    _, _, plain_metrics = jax.jit(step)(weights, tx.init(weights), x, y)
    _, metrics = jax.jit(lambda s, x, y: s.train_step(x, y))(state, x, y)
    assert plain_metrics["energy"].shape == (4,)
    np.testing.assert_allclose(plain_metrics["energy"], metrics["energy"], rtol=1e-5)


def test_conv_step_matches_plain_jax():
    model = models.VGG5(channels=(4, 8, 8, 8))
    x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 3))
    y = jax.nn.one_hot(jnp.arange(8) % 10, 10)
    # T=4 reaches the first conv layer; node lr 0.1 keeps its gradient well above rounding
    # (at 0.01 it is ~1e-7 of the top layer's, and Adam turns rounding noise there into
    # full-size steps of either sign).
    _compare(model, plain_pc.vgg5_layers(4), x, y, inference_steps=4, node_lr=0.1)


def test_unrolled_and_rolled_inference_give_the_same_weights():
    """flax_pc's ``unroll=True`` (default) and ``unroll=False`` train a conv net alike."""
    model = models.CNN(channels=(4, 8), hidden=(16,))
    x = jax.random.uniform(jax.random.key(0), (8, 12, 12, 1))
    y = jax.nn.one_hot(jnp.arange(8) % 10, 10)
    params = jax.jit(model.init)(jax.random.key(1, impl="rbg"), x)["params"]
    weights = {}
    for unroll in (True, False):
        state = fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-3),
            inference=fpc.Inference(optax.sgd(0.1), 4, unroll=unroll),
        )  # fmt: skip
        step = jax.jit(lambda s, x, y: s.train_step(x, y))
        for _ in range(STEPS):
            state, _ = step(state, x, y)
        weights[unroll] = state.params
    for a, b in zip(
        jax.tree_util.tree_leaves(weights[True]), jax.tree_util.tree_leaves(weights[False])
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # The weights moved (a comparison of untouched copies would pass trivially).
    assert not np.allclose(weights[True]["Conv_0"]["kernel"], params["Conv_0"]["kernel"])


def test_cnn_step_matches_plain_jax():
    model = models.CNN(channels=(4, 8), hidden=(16,))
    x = jax.random.uniform(jax.random.key(0), (8, 12, 12, 1))
    y = jax.nn.one_hot(jnp.arange(8) % 10, 10)
    _compare(model, plain_pc.cnn_layers(2), x, y, inference_steps=4, node_lr=0.1)


@pytest.mark.slow
def test_benchmark_script_runs_end_to_end(tmp_path):
    from benchmarks import pc_benchmark

    tiny = ["--data_dir", "synthetic", "--batches", "2", "--epochs", "2", "--repeats", "1"]
    tiny += ["--test_examples", "64", "--out", str(tmp_path)]
    report = pc_benchmark.main([*tiny, "--workload", "reference", "--unroll", "both"])
    (point,) = report["points"]
    assert point["dataset"] == "synthetic"
    impls = ("flax_pc", "flax_pc_rolled", "plain_jax", "plain_jax_rolled", "backprop")
    assert set(point["results"]) == {
        f"{impl}/{style}" for impl in impls for style in ("batch", "epoch")
    }  # fmt: skip
    for style in ("batch", "epoch"):
        for loop in ("", "_rolled"):
            pair = f"flax_pc{loop} - W_plain_jax{loop}"
            assert point["ratios"][f"{style}: max |W_{pair}|"] <= 1e-5
            assert point["ratios"][f"{style}: flax_pc{loop}/plain_jax{loop} s/epoch"] > 0
        assert point["ratios"][f"{style}: max |W_flax_pc - W_flax_pc_rolled|"] <= 1e-5
    flops = point["flops"]
    assert flops["forward"] < flops["backprop"] < flops["plain_jax_pc"]
    # flax_pc may skip work the equations do (the first inference step), not add much.
    assert 0.5 < flops["flax_pc_over_plain_jax"] < 1.05
    assert (tmp_path / "reference.json").is_file()

    conv = ["--workload", "conv", "--conv_channels", "4,4,4,4", "--styles", "epoch", "--no_flops"]
    report = pc_benchmark.main([*tiny, *conv])
    assert set(report["points"][0]["results"]) == {
        "flax_pc/epoch",
        "plain_jax/epoch",
        "backprop/epoch",
    }
    assert (tmp_path / "conv.png").is_file()


@pytest.mark.slow
def test_benchmark_script_runs_cnn_and_resnet(tmp_path):
    from benchmarks import pc_benchmark

    tiny = ["--data_dir", "synthetic", "--batches", "1", "--epochs", "1", "--repeats", "1"]
    tiny += ["--test_examples", "16", "--out", str(tmp_path), "--no_flops"]
    cnn = ["--workload", "cnn", "--cnn_channels", "2,2", "--cnn_hidden", "8", "--styles", "batch"]
    (point,) = pc_benchmark.main([*tiny, *cnn])["points"]
    assert set(point["results"]) == {"flax_pc/batch", "flax_pc_rolled/batch", "backprop/batch"}
    assert point["ratios"]["batch: max |W_flax_pc - W_flax_pc_rolled|"] <= 1e-5
    assert point["ratios"]["batch: flax_pc_rolled/flax_pc s/epoch"] > 0

    resnet = ["--workload", "resnet", "--resnet_stem", "2", "--resnet_stages", "2,4"]
    (point,) = pc_benchmark.main([*tiny, *resnet, "--batches", "2"])["points"]
    assert set(point["results"]) == {"flax_pc/batch", "backprop/batch"}
    assert point["ratios"]["batch: flax_pc/backprop s/epoch"] > 0
    for result in point["results"].values():
        assert result["xla_temp_bytes"] > 0
    assert (tmp_path / "resnet.json").is_file()


@pytest.mark.slow
def test_scaling_script_checks_simulated_devices(tmp_path):
    import json
    import subprocess
    import sys

    script = pathlib.Path(__file__).parents[1] / "benchmarks" / "scaling.py"
    args = ["--simulate_cpu_devices", "2", "--steps", "3", "--batch_size", "64", "--repeats", "1"]
    # At XLA's own optimisation level, not the tests' -O0 (conftest.py): the bound below
    # is rounding (the batch sums reordered) that Adam amplifies, measured there.
    flags = os.environ["XLA_FLAGS"].replace("--xla_backend_optimization_level=0", "")
    out = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, XLA_FLAGS=flags),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "it is not a speed-up measurement" in out.stdout
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert [row["devices"] for row in report["rows"]] == [1, 2]
    assert report["rows"][1]["max_weight_difference_to_1"] < 1e-4


@pytest.mark.slow
def test_depth_table_script_runs_end_to_end(tmp_path):
    import json

    from benchmarks import deep_pc

    rows = deep_pc.main(
        ["--data_dir", str(tmp_path / "no_data"), "--depths", "3", "--epochs", "0.1",
         "--max_steps", "20", "--out", str(tmp_path)]
    )  # fmt: skip
    assert [row["variant"] for row in rows] == list(deep_pc.VARIANTS)
    for row in rows:
        assert 0 <= row["test_accuracy"] <= 1 and row["depth"] == 3
        if row["variant"].startswith("bp"):
            assert "steps_to_converge" not in row
        else:
            assert 1 <= row["steps_to_converge"] <= 20
            assert np.isfinite(row["energy_ratio_first_last"])
    assert json.loads((tmp_path / "deep_pc.json").read_text()) == rows
    assert (tmp_path / "deep_pc.png").stat().st_size > 0


@pytest.mark.slow
def test_nnx_step_script_trains_every_variant_to_the_linen_weights(tmp_path):
    import json

    from benchmarks import nnx_step

    result = nnx_step.main(
        ["--data_dir", str(tmp_path / "no_data"), "--batch_size", "32", "--rounds", "2",
         "--steps", "3", "--out", str(tmp_path)]
    )  # fmt: skip
    assert result["data"] == "synthetic"
    assert set(result["variants"]) == set(nnx_step.VARIANTS)
    for row in result["variants"].values():
        assert row["ms_per_step"] > 0 and row["ratio_to_linen"] > 0
        # The same maths on the same batches: float32 rounding at most.
        assert row["max_weight_difference"] <= 1e-6
    assert json.loads((tmp_path / "nnx_step.json").read_text()) == result


@pytest.mark.slow  # the script end to end, as its siblings
def test_compile_time_script_runs(tmp_path):
    from benchmarks import compile_time

    report = compile_time.main(
        ["--models", "mlp", "--steps", "4,40", "--max_unrolled", "4", "--repeats", "1",
         "--run_models", "mlp", "--runs", "1", "--infer_steps", "50", "--out", str(tmp_path)]
    )  # fmt: skip
    short, long = report["rows"]
    assert (short["default_unroll"], long["default_unroll"]) == (True, 1)
    assert "unrolled_compile_s" in short and "unrolled_compile_s" not in long
    assert long["default_over_rolled"] > 0 and long["default_ms_per_batch"] > 0
    assert report["infer"]["energy_last"] < report["infer"]["energy_first"]
    assert (tmp_path / "compile_time.json").exists()


def test_lm_data_is_windows_and_their_next_characters():
    from benchmarks import data as data_lib

    ds, vocab_size = data_lib.characters(None, num_train=8, num_test=4, context=16)
    assert ds.name == "synthetic" and ds.x_train.shape == (8, 16) and ds.x_test.shape == (4, 16)
    assert ds.y_train.shape == (8, 16, vocab_size) and np.all(ds.y_train.sum(-1) == 1)
    # The target of each position is the input of the next one.
    np.testing.assert_array_equal(ds.y_train[:, :-1].argmax(-1), ds.x_train[:, 1:])


def test_lm_workload_takes_the_example_config_s_settings():
    from benchmarks import pc_benchmark
    from configs import lm

    config = lm.get_config()
    workload = pc_benchmark.lm_workload(vocab_size=5, width=16, context=16)
    assert (workload.inference_steps, workload.node_lr, workload.latent, workload.batch_size) == (
        config.inference_steps, config.node_learning_rate, config.latent, config.batch_size
    )  # fmt: skip
    targets, logits = jnp.eye(5)[jnp.array([0, 3])], jnp.zeros((2, 5))
    np.testing.assert_allclose(
        workload.output_energy(targets, logits),
        config.output_precision * fpc.energies.cross_entropy(targets, logits),
    )


@pytest.mark.slow
def test_benchmark_script_runs_lm(tmp_path):
    from benchmarks import pc_benchmark

    tiny = ["--data_dir", "synthetic", "--batches", "2", "--epochs", "2", "--repeats", "1"]
    tiny += ["--test_examples", "16", "--out", str(tmp_path), "--no_flops"]
    lm = ["--workload", "lm", "--lm_width", "16", "--lm_context", "16"]
    (point,) = pc_benchmark.main([*tiny, *lm])["points"]
    assert set(point["results"]) == {"flax_pc/epoch", "backprop/epoch"}
    assert point["ratios"]["epoch: flax_pc/backprop s/epoch"] > 0
    assert point["ratios"]["epoch: flax_pc/backprop compile"] > 0
    for result in point["results"].values():
        assert 0 <= result["test_accuracy"] <= 1  # per character
    assert (tmp_path / "lm.json").is_file()
