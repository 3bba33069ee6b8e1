"""Type aliases shared by flax_pc's modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import jax

Array: TypeAlias = jax.Array
#: Any nest of dicts/lists/tuples of arrays (params, node collections, optimiser states).
PyTree: TypeAlias = Any
#: A linen ``apply`` (``model.apply``, or ``functools.partial(model.apply, train=True)``).
ApplyFn: TypeAlias = Callable[..., Any]
#: ``energy(value, prediction) -> [B]``: one non-negative number per example.
EnergyFn: TypeAlias = Callable[[Array, Array], Array]
#: ``output_energy(targets, output) -> [B]``: targets and the model's output as
#: they are (arrays, or any pytrees for a custom one).
OutputEnergyFn: TypeAlias = Callable[[Any, Any], Array]
#: A PRNG key or an int seed, or linen's ``rngs`` convention: a dict ``{stream: key}``.
RNG: TypeAlias = Array | int | Mapping[str, Array | int]
