"""The README's quickstart runs exactly as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).parents[1] / "README.md"


def test_quickstart_runs_as_written():
    text = README.read_text()
    quickstart = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S)[1]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (5,)
    assert energy[-1] < energy[0]
    assert namespace["logits"].shape == (256, 10)


def test_batchnorm_dropout_example_runs_as_written():
    text = README.read_text()
    section = text[text.index("### Your model: BatchNorm, Dropout") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    stats = namespace["state"].model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert np.abs(np.asarray(stats)).max() > 0  # the running averages moved
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (9,)
    assert energy[-1] < energy[0]
    assert namespace["logits"].shape == (128, 10)
