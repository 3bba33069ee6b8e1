"""The examples on several devices and processes (simulated CPU devices, 127.0.0.1)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).parents[1]
MNIST = str(ROOT / "examples" / "mnist" / "main.py")


def _env(devices):
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--x")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _start(workdir, devices, *flags):
    return subprocess.Popen(
        [sys.executable, MNIST, "--config=configs/test.py", f"--workdir={workdir}", *flags],
        cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(workdir, *flags, port=None):
    address = f"--coordinator_address=127.0.0.1:{port or _port()}"
    return [
        _start(workdir, 2, address, "--num_processes=2", f"--process_id={i}", *flags)
        for i in range(2)
    ]


def _finish(process, timeout=300):
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def _wait_for_a_checkpoint(workdir, process):
    """Waits until ``process`` has saved a checkpoint in ``workdir``; returns the folder."""
    checkpoints = workdir / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint"
        time.sleep(0.1)
    return checkpoints


def _accuracies(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["test_accuracy"] for line in lines]


@pytest.mark.slow
def test_one_device_four_devices_and_two_processes_end_alike(tmp_path):
    results = {}
    for name, devices in (("one", 1), ("four", 4)):
        code, err = _finish(_start(tmp_path / name, devices, "--config.num_epochs=1"))
        assert code == 0, err[-3000:]
        assert f"on {devices} device{'s' if devices > 1 else ''}." in err
        results[name] = _accuracies(tmp_path / name)
    outputs = [_finish(p) for p in _processes(tmp_path / "two", "--config.num_epochs=1")]
    for code, err in outputs:
        assert code == 0, err[-3000:]
        assert "on 4 devices in 2 processes." in err
    results["two"] = _accuracies(tmp_path / "two")
    assert len(results["one"]) == 1
    for name in ("four", "two"):
        assert abs(results[name][0] - results["one"][0]) <= 0.002, results


@pytest.mark.slow
def test_the_nnx_model_on_two_processes_ends_as_on_one_device(tmp_path):
    """train_nnx.py: the NNX state (its RNG stream's key too) replicated over two processes."""
    flags = ("--config.flax_api=nnx", "--config.num_epochs=1")
    code, err = _finish(_start(tmp_path / "one", 1, *flags))
    assert code == 0, err[-3000:]
    for code, err in [_finish(p) for p in _processes(tmp_path / "two", *flags)]:
        assert code == 0, err[-3000:]
        assert "NNX model 'mlp'" in err and "on 4 devices in 2 processes." in err
    assert abs(_accuracies(tmp_path / "two")[0] - _accuracies(tmp_path / "one")[0]) <= 0.002


@pytest.mark.slow
def test_a_killed_process_ends_the_run_and_a_rerun_resumes(tmp_path):
    workdir = tmp_path / "run"
    long = (
        "--config.num_epochs=40",
        "--config.synthetic_train_size=2048",
        "--heartbeat_timeout=10",
    )
    first, second = _processes(workdir, *long)
    _wait_for_a_checkpoint(workdir, first)
    second.send_signal(signal.SIGKILL)
    start = time.monotonic()
    code, _ = _finish(first, timeout=120)
    assert code != 0
    assert time.monotonic() - start < 120
    _finish(second, timeout=30)  # reaps it and closes its pipes
    rerun = _processes(workdir, "--config.num_epochs=3", long[1], "--heartbeat_timeout=10")
    for code, err in [_finish(p) for p in rerun]:
        assert code == 0, err[-3000:]
        assert "Resuming from epoch" in err


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_devices(tmp_path):
    code, err = _finish(_start(tmp_path / "run", 4, "--config.batch_size=30"))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "Error: config.batch_size = 30 cannot be split over the 4 devices of this run: use a "
        "multiple of 4."
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_unreachable_coordinator_is_a_clear_error(tmp_path):
    alone = _start(
        tmp_path / "run", 2, f"--coordinator_address=127.0.0.1:{_port()}",
        "--num_processes=2", "--process_id=1", "--initialization_timeout=5",
    )  # fmt: skip
    code, err = _finish(alone, timeout=120)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: process 1 could not join the run at 127.0.0.1:"), last
    assert "within 5 s" in last


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_after_the_same_epoch(tmp_path):
    """SIGTERM is JAX's preemption notice: every process saves the same epoch, then stops."""
    workdir = tmp_path / "run"
    long = ("--config.num_epochs=40", "--config.synthetic_train_size=2048")
    first, second = _processes(workdir, *long)
    checkpoints = _wait_for_a_checkpoint(workdir, first)
    second.send_signal(signal.SIGTERM)
    lasts = []
    for code, err in [_finish(p, timeout=120) for p in (first, second)]:
        assert code == 1, err[-3000:]
        lasts.append(err.strip().splitlines()[-1])
    assert lasts[0] == lasts[1], lasts
    assert lasts[0].startswith("Error: stopped by a preemption notice (SIGTERM) after epoch "), (
        lasts
    )
    resume = int(lasts[0].rsplit("resume from epoch ", 1)[1].rstrip("."))
    assert max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == resume
    assert len(_accuracies(workdir)) == resume  # metrics.jsonl: every saved epoch, no more
    rerun = _processes(
        workdir, f"--config.num_epochs={resume + 1}", "--config.synthetic_train_size=2048"
    )
    for code, err in [_finish(p) for p in rerun]:
        assert code == 0, err[-3000:]
        assert f"Resuming from epoch {resume} of {resume + 1}" in err
