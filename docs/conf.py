"""Sphinx configuration for the flax_pc documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    python -m sphinx -W -b html docs /tmp/flax_pc_docs

The tutorials in ``docs/tutorials/`` are MyST markdown notebooks, executed at
every build (offline, on CPU, in seconds); a cell error fails the build.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The notebooks run on CPU, whatever the machine has: the outputs stay the same.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "flax_pc"
author = "flax_pc authors"
copyright = "flax_pc authors"
release = re.search(r'__version__ = "([^"]+)"', (ROOT / "flax_pc" / "__init__.py").read_text())[1]
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
root_doc = "index"

# -- API reference ----------------------------------------------------------
autosummary_generate = False  # the API page writes its own autodoc directives
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"exclude-members": "__init__, __new__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes: as a field list (no duplicate object entries)
add_module_names = False
python_use_unqualified_type_names = True
# Every cross-reference to flax_pc must resolve (a renamed or private name in a
# docstring or a guide fails the build under -W). Other packages' types are not
# linked: the build is offline (no intersphinx).
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(collections\.abc|jax|jaxlib|optax|flax|numpy|typing)\..*"),
    # Names in signatures that are not API: jax's Array under its alias, the
    # Literal aliases of the options (their docstrings list the values) and
    # the named tuple that mupc_scalings returns.
    ("py:class", r"Array|Algorithm|Latent|ValueInit|flax_pc\._src\.mupc\.MuPCScalings"),
]

# -- Notebooks (myst-nb) ----------------------------------------------------
nb_execution_mode = "force"  # run every tutorial at every build
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_timeout = 300
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# -- HTML -------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"flax_pc {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []
# Offline build: no intersphinx, nothing fetched.


# -- Every public name documented ---------------------------------------------
def _check_api_coverage(app):
    """Warns (an error under -W) for a name of ``flax_pc.__all__`` missing from api.rst."""
    from sphinx.util import logging

    import flax_pc

    text = (Path(app.srcdir) / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. (?:auto\w+|py:\w+):: (?:flax_pc\.)?(\w+)", text, re.M))
    for name in sorted(set(flax_pc.__all__) - documented):
        logging.getLogger(__name__).warning(
            "flax_pc.%s is in flax_pc.__all__ but not documented in docs/api.rst", name
        )


def setup(app):
    app.connect("builder-inited", _check_api_coverage)
