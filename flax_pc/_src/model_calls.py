"""Calling the model: the variables flax_pc passes, and Flax's errors made clear.

Every flax_pc function calls the user's linen ``apply`` through
:func:`apply_model`. Two of Flax's errors there mean that flax_pc was not
given something (a key of an RNG stream, a collection of the model's state);
they are rewritten into one message that says what to pass where
(:func:`translate_flax_error`). The rewrite reads the stream or collection
name from Flax's message; where Flax's wording changes and the name cannot be
read, the message says so and keeps Flax's text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flax import errors as flax_errors
from flax.core import meta

from flax_pc._src.nodes import ENERGIES, NODES
from flax_pc._src.rngs import RNG_STREAMS
from flax_pc._src.types import ApplyFn, Array, PyTree


def check_model_state(model_state: Any) -> dict[str, PyTree]:
    """``model_state`` as a plain dict of collections; raises on a bad one.

    flax_pc's own collections (:data:`~flax_pc.NODES`, :data:`~flax_pc.ENERGIES`:
    per batch, made by flax_pc) are left out, so everything but ``'params'``
    of ``model.init(...)`` can be passed as it is.
    """
    if model_state is None:
        return {}
    if not isinstance(model_state, Mapping):
        raise TypeError(
            "model_state must be a dict of the model's non-param collections, e.g. "
            f"{{'batch_stats': variables['batch_stats']}}; got {type(model_state).__name__}."
        )
    if "params" in model_state:
        raise ValueError(
            "model_state holds 'params': it is for the model's other collections (e.g. "
            "'batch_stats'); the params are passed apart."
        )
    kept = {k: v for k, v in model_state.items() if k not in (NODES, ENERGIES)}
    return meta.unbox(_plain_dicts(kept))


def _plain_dicts(tree: Any) -> Any:
    # FrozenDicts in, dicts out of apply: one type, so jit and scan see one structure.
    if isinstance(tree, Mapping):
        return {key: _plain_dicts(value) for key, value in tree.items()}
    return tree


#: Where Flax's messages name the stream or collection (``'... PRNG for "dropout" ...'``).
RNG_PATTERN = r'PRNG for "([^"]+)"'
COLLECTION_PATTERN = r'collection "([^"]+)"'


def _quoted(message: str, pattern: str) -> str | None:
    match = re.search(pattern, message)
    return match[1] if match else None


def rng_error(error: flax_errors.InvalidRngError) -> ValueError:
    """Flax's error for a stream without a key, as what to pass to flax_pc."""
    stream = _quoted(str(error), RNG_PATTERN)
    if stream is None:  # Flax's wording changed: say what we know, keep its text
        return ValueError(
            "The model draws random numbers from an RNG stream that was given no key (Flax's "
            "message below names it): pass rng=key, or rng={stream: key, ...} naming every "
            "stream the model draws from, to train_step, train_epoch or the flax_pc function "
            f"you called. ({error})"
        )
    hint = (
        "rng=key (a bare key feeds " + " and ".join(repr(s) for s in RNG_STREAMS) + ")"
        if stream in RNG_STREAMS
        else f"rng={{{stream!r}: key, ...}} (a dict of every stream the model draws from)"
    )
    return ValueError(
        f"The model draws random numbers from the RNG stream {stream!r} but no key was "
        f"given for it: pass {hint} to train_step, train_epoch or the flax_pc function "
        f"you called. ({error})"
    )


def collection_error(error: Exception) -> ValueError:
    """Flax's error for a collection flax_pc was not given, as what to pass to flax_pc."""
    collection = _quoted(str(error), COLLECTION_PATTERN)
    if collection is None:  # Flax's wording changed: say what we know, keep its text
        name, given = "a variable collection", "model_state={name: variables[name]}"
    else:
        name, given = repr(collection), f"model_state={{{collection!r}: variables[{collection!r}]}}"
    return ValueError(
        f"The model uses {'the variable collection ' if collection else ''}{name} (e.g. "
        f"BatchNorm's running averages), which flax_pc was not given: pass {given} "
        "(PCTrainState.create(..., model_state=...), or model_state= to the flax_pc function "
        f"you called), with variables = model.init(...). ({error})"
    )


def apply_model(
    apply_fn: ApplyFn,
    params: PyTree,
    inputs: PyTree,
    *,
    nodes: PyTree = None,
    model_state: Mapping[str, PyTree] | None = None,
    rngs: Mapping[str, Array] | None = None,
    mutable: Sequence[str] = (),
) -> tuple[Any, dict[str, PyTree]]:
    """Calls the model the way every flax_pc function does.

    The model gets ``params``, ``nodes`` (if any) and ``model_state``; the
    ``mutable`` collections and those of ``model_state`` are mutable. Flax's
    errors for a missing RNG stream or collection become one clear error.

    Returns:
      ``(output, collections)``: the model's output and the mutable collections
      it returned (those of ``model_state`` included).
    """
    model_state = model_state or {}
    variables = {"params": params, **model_state}
    if nodes:
        variables[NODES] = nodes
    mutable = [*mutable, *model_state]
    try:
        if mutable:
            output, collections = apply_fn(variables, inputs, mutable=mutable, rngs=rngs)
            return output, dict(collections)
        return apply_fn(variables, inputs, rngs=rngs), {}
    except flax_errors.InvalidRngError as error:
        raise rng_error(error) from None
    except (flax_errors.ScopeCollectionNotFound, flax_errors.ModifyScopeVariableError) as error:
        raise collection_error(error) from None
