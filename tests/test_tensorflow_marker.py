"""The marker ``tensorflow`` cannot lie (tests/conftest.py): outside the tests marked with
it, TensorFlow is hidden, in the test process and in the examples it starts; a marked test
must use it."""

import importlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
from xml.etree import ElementTree

import pytest
from without_tensorflow.sitecustomize import PACKAGES

TESTS = pathlib.Path(__file__).parent
ROOT = TESTS.parent

# Each fails under tests/conftest.py, with TensorFlow installed or not.
PROBES = """
import pytest


@pytest.fixture(scope="module")
def shared():
    return "a run of an example, say"


def test_unmarked_imports_tensorflow():
    import tensorflow  # noqa: F401


def test_unmarked_imports_clu():
    from clu import metric_writers  # noqa: F401


@pytest.mark.tensorflow
def test_marked_imports_nothing():
    pass


@pytest.mark.tensorflow
def test_marked_is_the_first_to_set_up_a_shared_fixture(shared):
    import tensorflow  # noqa: F401
"""


def test_an_unmarked_test_runs_as_without_tensorflow():
    for name in PACKAGES:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)
        assert importlib.util.find_spec(name) is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tensorboard.summary")
    # And so does an example started in a subprocess (tests/without_tensorflow).
    code = f"import importlib.util as u, examples; print(*map(u.find_spec, {PACKAGES!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None"] * len(PACKAGES)


@pytest.mark.tensorflow
def test_a_marked_test_sees_tensorflow():
    import tensorboard

    assert "without_tensorflow" not in os.environ.get("PYTHONPATH", "")
    for name in PACKAGES:
        assert importlib.util.find_spec(name) is not None, name
    assert tensorboard.__version__


def test_a_test_that_lies_about_tensorflow_fails(tmp_path):
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(TESTS / name, tmp_path)
    shutil.copytree(TESTS / "without_tensorflow", tmp_path / "without_tensorflow")
    (tmp_path / "test_probes.py").write_text(PROBES)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "test_probes.py", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-n", "0",
         "--junitxml", str(tmp_path / "report.xml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:]
    outcomes = {
        case.get("name"): f"{problem.tag}: {problem.get('message')}"
        for case in ElementTree.parse(tmp_path / "report.xml").iter("testcase")
        for problem in case
        if problem.tag in ("failure", "error")
    }
    expected = {  # the start of each report
        "test_unmarked_imports_tensorflow": "failure: ModuleNotFoundError: import of tensorflow",
        "test_unmarked_imports_clu": "failure: ModuleNotFoundError: import of clu",
        "test_marked_imports_nothing": "failure: Failed: marked `tensorflow` but imported none",
        "test_marked_is_the_first_to_set_up_a_shared_fixture": "error: failed on setup with "
        "\"Failed: marked `tensorflow`, it sets up the module-scoped fixture 'shared'",
    }
    assert set(outcomes) == set(expected), out.stdout[-3000:]
    for name, start in expected.items():
        assert outcomes[name].startswith(start), (name, outcomes[name])
