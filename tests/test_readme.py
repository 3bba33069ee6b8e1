"""The README's code runs exactly as written: the quickstart, BatchNorm/Dropout, deep networks."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


def run_first_block_after(heading):
    """Runs the first ```python block after ``heading``; returns its namespace."""
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S)[1]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_quickstart_runs_as_written():
    namespace = run_first_block_after("## Quickstart")
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (5,)
    assert energy[-1] < energy[0]
    assert namespace["logits"].shape == (256, 10)


def test_batchnorm_dropout_example_runs_as_written():
    namespace = run_first_block_after("### Your model: BatchNorm, Dropout")
    stats = namespace["state"].model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert np.abs(np.asarray(stats)).max() > 0  # the running averages moved
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (9,)
    assert energy[-1] < energy[0]
    assert namespace["logits"].shape == (128, 10)


def test_deep_network_example_runs_as_written():
    namespace = run_first_block_after("### Deep networks")
    steps = int(namespace["metrics"]["inference_steps"])
    assert 1 <= steps < 200  # stopped at the tolerance, not at the maximum
    assert namespace["metrics"]["energy"].shape == (2,)
    assert len(namespace["metrics"]["node_energies"]) == 31  # every layer but the output
    ratio = namespace["fpc"].diagnostics.energy_ratio(namespace["metrics"]["node_energies"])
    assert float(ratio) > 0.1
