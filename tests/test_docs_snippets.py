"""Code the docs show outside an executed cell's context runs as written.

The NNX quickstart of docs/tutorials/nnx.md ("In short"): the library
README's quickstart written in Flax NNX. The docs build executes it too; this
checks what it prints.
"""

import pathlib
import re

import numpy as np

NNX_TUTORIAL = pathlib.Path(__file__).parents[1] / "docs" / "tutorials" / "nnx.md"


def run_first_cell_after(path, heading):
    """Runs the first MyST code cell after ``heading`` in ``path``; returns its namespace."""
    text = path.read_text()
    match = re.search(r"```\{code-cell\} ipython3\n(.*?)```", text[text.index(heading) :], re.S)
    assert match, f"no code cell after {heading!r} in {path}"
    code = match[1]
    namespace = {}
    exec(compile(code, str(path), "exec"), namespace)
    return namespace


def test_nnx_quickstart_runs_as_written():
    namespace = run_first_cell_after(NNX_TUTORIAL, "## In short")
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (5,)  # 4 inference steps + 1
    assert np.all(np.diff(energy) < 0)  # inference lowers the energy
    assert sorted(namespace["metrics"]["node_energies"]) == ["nodes/0", "nodes/1", "nodes/2"]
    assert namespace["logits"].shape == (256, 10)
    assert int(namespace["optimizer"].step[...]) == 10
