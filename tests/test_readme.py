"""The README's code runs exactly as written: every ```python block, checked where it promises."""

import pathlib

import numpy as np
import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"


def python_blocks(text):
    """``[(heading, index, code)]``: each ```python block, under its section heading.

    ``index`` counts the python blocks of one section (0 for the first).
    """
    blocks, heading, fence, code = [], "", None, []
    for line in text.splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, code = line.strip()[3:], []
        elif fence is not None and line.startswith("```"):
            if fence == "python":
                index = sum(h == heading for h, _, _ in blocks)
                blocks.append((heading, index, "".join(code)))
            fence = None
        elif fence is not None:
            code.append(line)
        elif line.startswith("#"):
            heading = line.strip()
    return blocks


def check_quickstart(namespace):
    energy = np.asarray(namespace["metrics"]["energy"])
    assert energy.shape == (5,)  # 4 inference steps + 1
    assert energy[-1] < energy[0]  # inference lowered the energy
    assert namespace["logits"].shape == (256, 10)


# What a block promises beyond running, by (section heading, block index).
CHECKS = {
    ("## Quickstart", 0): check_quickstart,  # linen
    ("## Quickstart", 1): check_quickstart,  # NNX: the same promises
}
BLOCKS = python_blocks(README.read_text())


def test_the_checked_blocks_are_in_the_readme():
    assert set(CHECKS) <= {(heading, index) for heading, index, _ in BLOCKS}


@pytest.mark.parametrize(
    "heading, index, code", BLOCKS, ids=[f"{h.lstrip('# ')}-{i}" for h, i, _ in BLOCKS]
)
def test_readme_code_runs_as_written(heading, index, code):
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    check = CHECKS.get((heading, index))
    if check is not None:
        check(namespace)
