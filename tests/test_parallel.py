"""DataParallel: 1 device vs 4 simulated devices vs 2 processes x 2 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import flax_pc as fpc

SCRIPT = pathlib.Path(__file__).with_name("data_parallel_run.py")


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _result(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("RESULT ") :])


def _run(devices, use, timeout=240):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(use)], env=_env(devices),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return _result(out.stdout)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same(a, b):
    for key in ("params", "batch_stats", "energy"):
        for x, y in zip(a[key], b[key], strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module")
def one_device():
    return _run(devices=4, use=1)


@pytest.mark.slow
def test_four_devices_equal_one(one_device):
    four = _run(devices=4, use=0)
    assert (one_device["devices"], four["devices"]) == (1, 4)
    _assert_same(four, one_device)


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one(one_device):
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "0", address, "2", str(i)],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    results = [_result(out) for out, _ in outputs]
    assert [(r["devices"], r["processes"]) for r in results] == [(4, 2), (4, 2)]
    for r in results:
        _assert_same(r, one_device)


def test_a_batch_that_does_not_divide_is_an_error():
    parallel = fpc.DataParallel.create(jax.devices()[:1])
    assert parallel.num_devices == 1
    sharded = parallel.shard(np.ones((3, 2)))
    assert sharded.shape == (3, 2)
    with pytest.raises(ValueError, match="cannot be split over 1 devices"):
        parallel.shard(np.float32(1.0))
