"""Warnings that point at the user's line, not into flax_pc, JAX or Flax.

flax_pc warns while JAX traces the user's function (``jax.jit(state.train_step)``),
many frames below the user's call: a fixed ``stacklevel`` lands inside JAX.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings

import flax
import jax
import jaxlib
import optax

_FLAX_PC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple(
    directory + os.sep
    for directory in (
        _FLAX_PC_DIR,
        *(os.path.dirname(m.__file__) for m in (jax, jaxlib, flax, optax) if m.__file__),
    )
)
_LIBRARY_FILES = tuple(m.__file__ for m in (contextlib, functools) if m.__file__ is not None)


def _in_library(filename: str) -> bool:
    return filename.startswith(_LIBRARY_DIRS) or filename in _LIBRARY_FILES


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message)`` attributed to the nearest frame outside the libraries."""
    frame, level = sys._getframe(0), 1
    while frame is not None and _in_library(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
