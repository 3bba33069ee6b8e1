"""flax_pc: predictive coding for Flax linen models."""

import pathlib
import re

from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "flax_pc" / "__init__.py").read_text())[1]

# The library: lower bounds only. Tested with jax/jaxlib 0.10.2, flax 0.12.8,
# optax 0.2.8 (CI installs the newest releases).
CORE = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
]
# The examples without TensorFlow: enough to train, checkpoint and plot from
# IDX files (config.data_dir) or synthetic data.
EXAMPLES_CORE = [
    "absl-py>=2.1",
    "ml-collections>=1.1,<2",
    "orbax-checkpoint>=0.12.8,<0.13",
    "matplotlib>=3.8",
    "tqdm>=4.66",
]
# TensorFlow: TFDS (data_dir unset) and TensorBoard summaries (clu's writer is
# tf.summary; tensorflow-cpu does not bring tensorboard in).
TENSORFLOW = [
    "clu>=0.0.12",
    "tensorboard>=2.21,<2.22",
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    # tfds needs it to look up its datasets; it is not a declared dependency.
    "importlib_resources>=6",
]
EXAMPLES = EXAMPLES_CORE + TENSORFLOW
# Inference as an ODE (fpc.GradientFlow): pip install "flax_pc[ode]".
ODE = ["diffrax>=0.7"]
# The tests; those marked `tensorflow` (TFDS, TensorBoard files) need the
# `examples` extra too: pip install -e ".[test,examples]".
TEST = [
    "pytest>=8",
    "scikit-learn>=1.5",
    "ruff==0.17.6",
    "pyright==1.1.414",
    *ODE,
]

# The documentation (docs/): Sphinx with executed MyST notebooks, offline.
DOCS = [
    "sphinx>=7.3",
    "myst-nb>=1.1",
    "sphinx-book-theme>=1.1",
    "ipykernel>=6.29",
    "matplotlib>=3.8",
    "scikit-learn>=1.5",
    *ODE,  # the "Deep networks" tutorial solves inference as an ODE
]

EXTRA_PACKAGES = {
    "flax_pc_examples": "examples",
    "flax_pc_examples.common": "examples/common",
    "flax_pc_examples.mnist": "examples/mnist",
    "flax_pc_examples.generative": "examples/generative",
    "flax_pc_examples.configs": "configs",
    "flax_pc_benchmarks": "benchmarks",
}

setup(
    name="flax_pc",
    version=VERSION,
    description="Predictive coding for Flax linen models: PCNode, energies, PCTrainState.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    # The examples, their configs and the benchmarks install as packages too
    # (python examples/<name>/main.py imports its shared code from there).
    packages=["flax_pc", *EXTRA_PACKAGES],
    package_dir=EXTRA_PACKAGES,
    package_data={"flax_pc": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "ode": ODE,
        "examples": EXAMPLES,
        "test": TEST + EXAMPLES_CORE,
        "docs": DOCS,
    },
    license="Apache-2.0",
)
