"""axis_name: under jax.pmap / jax.shard_map, 2 devices take the step of 1 device on the batch."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from pc_models import MLP

import flax_pc as fpc

SCRIPT = pathlib.Path(__file__).with_name("named_axes_run.py")


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stdout
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["devices"] == 2
    return result["results"]


def _assert_same(a, b, what):
    for key in ("params", "batch_stats", "energy"):
        for x, y in zip(a[key], b[key], strict=True):
            np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6, err_msg=f"{what}: {key}"
            )
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5, err_msg=what)
    assert a["node_energies"].keys() == b["node_energies"].keys()
    for name in a["node_energies"]:
        np.testing.assert_allclose(
            a["node_energies"][name], b["node_energies"][name], rtol=1e-4, atol=1e-7, err_msg=what
        )
    assert a["energy_rose"] == b["energy_rose"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["pc", "ipc", "bp"])
@pytest.mark.parametrize("run", ["pmap1", "pmap2", "shard_map2"])
def test_two_devices_equal_one_device_on_the_whole_batch(results, algorithm, run):
    # pmap2 also checked that both replicas hold the same weights after every step.
    one_device = results[algorithm]["jit"]  # plain jit, BatchNorm without an axis name
    _assert_same(results[algorithm][run], one_device, f"{algorithm} {run}")
    if algorithm != "bp":
        assert one_device["node_energies"]  # the nodes took part


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(axis_name=0), TypeError, "axis_name must be None or the name"),
        (dict(axis_name=""), TypeError, "axis_name must be None or the name"),
        (
            dict(axis_name="batch", inference=fpc.Inference(optax.sgd(0.1), 3, tolerance=1e-3)),
            ValueError,
            "axis_name with inference to eq",
        ),
    ],
)
def test_bad_axis_name(kwargs, error, match):
    params = MLP().init(jax.random.key(0), np.ones((2, 4), np.float32))["params"]
    options = dict(inference=fpc.Inference(optax.sgd(0.1), 3)) | kwargs
    with pytest.raises(error, match=match):
        fpc.PCTrainState.create(apply_fn=MLP().apply, params=params, tx=optax.sgd(0.1), **options)


@pytest.mark.parametrize(
    "pmap_axis, state_axis, match",
    [
        (None, None, r"under jax.pmap without an axis_name .* replicas would drift apart"),
        ("batch", None, r"named axis 'batch' .*PCTrainState.create\(\.\.\., axis_name='batch'\)"),
        ("batch", "batch", None),
    ],
)
def test_a_state_without_the_axis_of_its_trace_warns(pmap_axis, state_axis, match):
    params = MLP().init(jax.random.key(0), np.ones((2, 4), np.float32))["params"]
    state = fpc.PCTrainState.create(
        apply_fn=MLP().apply, params=params, tx=optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.1), 2), axis_name=state_axis,
    )  # fmt: skip
    replicated = jax.tree_util.tree_map(lambda leaf: leaf[None], state)
    x, y = np.ones((1, 2, 4), np.float32), np.zeros((1, 2, 3), np.float32)
    step = jax.pmap(lambda s, x, y: s.train_step(x, y), axis_name=pmap_axis)
    if match is None:
        step(replicated, x, y)  # warnings are errors here
    else:
        with pytest.warns(UserWarning, match=match):
            step(replicated, x, y)
