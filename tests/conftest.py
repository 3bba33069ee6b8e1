"""Shared set-up and fixtures of the flax_pc tests (markers and warnings: pyproject.toml).

Helpers that are plain functions (``assert_trees_close``, ...) are in ``helpers.py``.

The marker ``tensorflow`` cannot lie
------------------------------------
``python -m pytest tests -m "not tensorflow"`` must pass with the ``test`` extra
alone, without TensorFlow. So that a missing marker fails here too, where
TensorFlow is installed, and a needless one does not leave a test out of that
run, every test runs as follows:

- A test not marked ``tensorflow`` (and collection, and every fixture it sets
  up) runs without TensorFlow, TensorBoard, TFDS, clu and Keras: their modules
  are hidden (``sys.modules[name] = None``, Python's own way to refuse an
  import: ``import tensorflow`` raises ModuleNotFoundError and
  ``importlib.util.find_spec`` finds nothing, as in an install without them).
  The examples behave as there: no TensorBoard summaries. Its subprocesses
  start with ``tests/without_tensorflow`` first on ``PYTHONPATH``, whose
  ``sitecustomize.py`` hides them the same way, so an example started in a
  subprocess runs without them too.
- A test marked ``tensorflow`` sees them, and fails unless it imports one of
  them in the test process (an ``import`` statement in its setup or body, its
  fixtures' and the code it calls included; an example it starts in a
  subprocess does not count: it checks TensorFlow's work in its own process).
  Nor may it be the first to set up a fixture of ``tests/`` wider than one
  test: that fixture would carry what TensorFlow wrote into the tests not marked.
"""

import atexit
import builtins
import collections
import inspect
import os
import pathlib
import shutil
import sys
import tempfile

# Set before anything imports jax, which reads them once.
# Tests compare against float32 references; keep XLA on the CPU deterministic
# (no fast math). The tests' programs are small and each is compiled for a few
# runs: LLVM's optimisations cost more time than they save. -O0 keeps XLA's own
# passes; results agree with -O2's to float rounding.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_backend_optimization_level=0"
)
# The examples' tests build the same train steps many times (each run, resume and
# subprocess jits anew): a compilation cache shared by the session, its subprocesses
# and pytest-xdist's workers compiles each program once. Cached executables are
# XLA's own, so results are unchanged; an entry read while another process writes
# it is compiled anew (pyproject.toml's filterwarnings lets JAX's warning pass).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="flax_pc_tests_jax_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402
from helpers import with_overrides  # noqa: E402
from without_tensorflow.sitecustomize import PACKAGES  # noqa: E402

# --- TensorFlow, hidden outside the tests marked `tensorflow` (see above) -----------

TENSORFLOW_PACKAGES = frozenset(PACKAGES)
TESTS = pathlib.Path(__file__).parent
#: First on a subprocess's PYTHONPATH while TensorFlow is hidden.
HIDING_FOLDER = str(TESTS / "without_tensorflow")


def _of_tensorflow(name):
    return name.partition(".")[0] in TENSORFLOW_PACKAGES


class _TensorFlow:
    """Hides and shows TensorFlow's modules; records the imports of them while shown."""

    def __init__(self):
        self.hidden = {}  # the modules loaded before they were hidden
        self.imported = False
        self.marked_test = None  # the test marked `tensorflow` being run, if any
        self._import = builtins.__import__
        self._loaded_before = set()
        self._python_path = None  # PYTHONPATH before hide()

    def hide(self):
        loaded = [name for name in sys.modules if _of_tensorflow(name)]
        self.hidden.update((n, m) for n in loaded if (m := sys.modules[n]) is not None)
        for name in [*TENSORFLOW_PACKAGES, *loaded]:
            sys.modules[name] = None  # pyright: ignore[reportArgumentType]
        # Without the folder: xdist's workers inherit the PYTHONPATH of a hiding process.
        given = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        self._python_path = os.pathsep.join(p for p in given if p and p != HIDING_FOLDER) or None
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HIDING_FOLDER, self._python_path]))

    def show(self, test):
        for name in [name for name in sys.modules if _of_tensorflow(name)]:
            del sys.modules[name]
        sys.modules.update(self.hidden)
        self.hidden = {}
        if self._python_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = self._python_path
        self.marked_test, self.imported = test, False
        self._loaded_before = set(sys.modules)
        builtins.__import__ = self._recording_import

    def stop_recording(self):
        builtins.__import__ = self._import
        if not self.imported:
            self.imported = any(_of_tensorflow(n) for n in set(sys.modules) - self._loaded_before)
        return self.imported

    def _recording_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and _of_tensorflow(name):
            self.imported = True
        return self._import(name, globals, locals, fromlist, level)


_tensorflow = _TensorFlow()
_tensorflow.hide()  # from collection on


def _marked(item):
    return item.get_closest_marker("tensorflow") is not None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if _marked(item):
        _tensorflow.show(item)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if _marked(item) and not _tensorflow.stop_recording():
        pytest.fail(
            "marked `tensorflow` but imported none of TensorFlow, TensorBoard, TFDS, clu, Keras "
            "in the test process: drop the marker (tests/conftest.py)",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if _marked(item):
            builtins.__import__ = _tensorflow._import  # a failed setup skipped the call
            _tensorflow.marked_test = None
            _tensorflow.hide()


def pytest_fixture_setup(fixturedef, request):
    """Refuses a fixture of ``tests/``, wider than a test, first set up by a marked test."""
    if _tensorflow.marked_test is None or fixturedef.scope == "function":
        return None
    source = inspect.getsourcefile(fixturedef.func)
    if source and pathlib.Path(source).parent == TESTS:
        pytest.fail(
            f"marked `tensorflow`, it sets up the {fixturedef.scope}-scoped "
            f"fixture {fixturedef.argname!r}, which would carry what TensorFlow wrote into "
            "tests not marked: give it a fixture of its own (tests/conftest.py)",
            pytrace=False,
        )
    return None


# --- The order of the modules -------------------------------------------------------


@pytest.hookimpl(trylast=True)  # after `-m` has deselected
def pytest_collection_modifyitems(items):
    """The modules with the most tests marked slow first, then the most tests first.

    pytest-xdist (pyproject.toml: ``--dist loadfile``) hands the modules to its
    workers in this order: the long ones start early, and a short one ends the run.
    A module's tests keep their order.
    """
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    tests = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (-slow[item.path], -tests[item.path], str(item.path)))


# --- Fixtures -----------------------------------------------------------------------


@pytest.fixture
def mnist_config():
    """configs/test.py (examples/mnist, tiny and synthetic) with overrides.

    ``mnist_config(batch_size=32)`` sets fields as ``--config.batch_size=32`` does.
    """
    from configs import test

    return lambda **overrides: with_overrides(test.get_config(), overrides)


@pytest.fixture
def generative_config():
    """configs/generative_test.py (examples/generative, tiny and synthetic) with overrides."""
    from configs import generative_test

    return lambda **overrides: with_overrides(generative_test.get_config(), overrides)


@pytest.fixture
def finished_copy(finished, tmp_path):
    """A copy of the workdir of the test module's ``finished`` run, for a test to change.

    Needs ``finished``, a fixture of the test module: ``(workdir, returncode,
    stderr)`` of a complete run of an example.
    """
    copy = tmp_path / "workdir"
    shutil.copytree(finished[0], copy)
    return copy
