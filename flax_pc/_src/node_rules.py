"""The rules of a value node, one set for linen's and NNX's ``PCNode``.

Both :class:`flax_pc.PCNode` (linen) and :class:`flax_pc.nnx.PCNode` check
their options, make their latents, check what they read and what their energy
returns, and word their errors here, so the two paths behave alike and say
the same thing for the same mistake.

**A new latent** (:func:`new_latent`) is made from the prediction ``mu`` as
``value_init`` says: ``'forward'`` (``v = mu``), ``'zeros'`` (``v = 0``) or
``'normal'``. A ``'normal'`` node does not draw its value itself: the value
must be the same on both paths, and neither linen's ``make_rng`` (which folds
the module's scope path into the key) nor NNX's streams can be reproduced on
the other path. It returns a placeholder (zeros) in a box that asks for a
draw (``NewLatent.draw_stddev``); node initialisation
(``flax_pc._src.initialization.initialize``, behind ``init_nodes`` and
``train_step`` on both paths) then draws every such value with :func:`draw`,
from the :data:`~flax_pc.NOISE` key and the latent's path in the
:data:`~flax_pc.NODES` collection alone, and runs the model again with the
drawn values given (:class:`DrawnValue`), so that the layers above start from
them and an ePC node stores ``e = v - mu`` for its own ``mu``.
"""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args

import jax
import jax.numpy as jnp
from flax import struct, traverse_util
from flax.core import meta

from flax_pc import energies as _energies
from flax_pc._src.types import Array, PyTree

ValueInit = Literal["forward", "zeros", "normal"]
VALUE_INITS: tuple[str, ...] = get_args(ValueInit)
Latent = Literal["value", "error"]
LATENTS: tuple[str, ...] = get_args(Latent)

#: Folded into the noise key before the latent's path, so the initial draws
#: take other keys than :func:`~flax_pc.langevin`'s noise (which folds its own constant).
_DRAW_SALT = zlib.crc32(b"value_init")


_B = TypeVar("_B", bound="_Box")


class _Box(struct.PyTreeNode, meta.AxisMetadata[Array]):
    """A node latent in a box that lifted transforms slice and stack as a plain array.

    Like ``nn.Partitioned``, ``apply`` reads through it and ``nn.meta.unbox``
    removes it; its other fields are static metadata, so they pass through
    ``nn.scan``, ``nn.vmap`` and ``nn.remat`` unchanged, where a sown flag
    would be stacked into an array.
    """

    value: Array

    def unbox(self) -> Array:
        return self.value

    def replace_boxed(self: _B, val: Any) -> _B:
        return self.replace(value=val)

    def add_axis(self: _B, index: int, params: dict) -> _B:
        return self

    def remove_axis(self: _B, index: int, params: dict) -> _B:
        return self


class NewLatent(_Box):
    """A new node latent (value or error), boxed with how it was made.

    A ``PCNode`` returns its new latents in this box from a call with
    :data:`~flax_pc.NODES` mutable; :func:`flax_pc.init_nodes` unboxes them.

    Attributes:
      value: the node's latent (its value ``v``, or its error ``e`` for
        ``latent='error'``), ``[B, *features]``.
      forward: ``True`` when the node starts at its prediction (``e = 0``)
        and its energy is :func:`~flax_pc.energies.squared_error` (whose
        gradient is zero there), so it adds nothing to the first inference
        step's gradient, which the first step exploits.
      draw_stddev: ``None`` for a latent that is made; for a node with
        ``value_init='normal'``, ``value`` is a placeholder (zeros) and this is
        the standard deviation of the value node initialisation draws for it
        (:func:`draw`).
    """

    forward: bool = struct.field(pytree_node=False)
    draw_stddev: float | None = struct.field(pytree_node=False, default=None)


class DrawnValue(_Box):
    """A drawn initial value ``v``, given to a ``value_init='normal'`` node to make its latent.

    Node initialisation passes it in the :data:`~flax_pc.NODES` collection
    (mutable) at the node's latent; the node makes its latent from it
    (``v``, or ``e = v - mu``) as it would from its own draw.
    """


# --- Options ---------------------------------------------------------------------


def check_options(energy: Any, value_init: Any, value_init_stddev: Any, latent: Any) -> None:
    """Raises on a bad option of ``PCNode(...)``, with the same message on both paths."""
    if value_init not in VALUE_INITS:
        raise ValueError(
            f"PCNode(value_init={value_init!r}): value_init must be one of {VALUE_INITS}."
        )
    if latent not in LATENTS:
        raise ValueError(
            f"PCNode(latent={latent!r}): latent must be 'value' (PC: inference moves the "
            "node's value) or 'error' (ePC: it moves the node's error)."
        )
    if not callable(energy):
        raise TypeError(
            "PCNode(energy=...) must be callable as energy(value, prediction) -> [B], got "
            f"{type(energy).__name__}."
        )
    if not _is_number(value_init_stddev):
        raise TypeError(
            f"PCNode(value_init_stddev={value_init_stddev!r}): value_init_stddev must be a "
            "number, the standard deviation of value_init='normal'."
        )


def _is_number(x: Any) -> bool:
    """A real number, or a concrete 0-d array of one (a static value for ``NewLatent``)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, numbers.Real):
        return True
    try:
        float(x)
    except (TypeError, ValueError):  # a traced value (ConcretizationTypeError), a string, ...
        return False
    return jnp.ndim(x) == 0 and not jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def starts_at_prediction(value_init: str, energy: Any) -> bool:
    """``NewLatent.forward``: the node starts at ``mu`` with a zero energy gradient there."""
    return value_init == "forward" and energy is _energies.squared_error


# --- Latents ---------------------------------------------------------------------


def new_latent(
    prediction: Array,
    *,
    value_init: str,
    latent: str,
    value_init_stddev: float,
    energy: Any,
    drawn: Array | None = None,
) -> NewLatent:
    """The new latent of a node from its prediction, boxed with how it was made.

    Args:
      prediction: ``mu``, ``[B, *features]``.
      value_init, latent, value_init_stddev, energy: the node's options.
      drawn: for ``value_init='normal'``, the value drawn for the node
        (:class:`DrawnValue`); ``None``: a placeholder that asks for it.
    """
    if value_init == "normal" and drawn is None:
        return NewLatent(
            jnp.zeros_like(prediction), forward=False, draw_stddev=float(value_init_stddev)
        )
    if latent == "error" and value_init == "forward":
        new = jnp.zeros_like(prediction)  # e = v - mu = 0, exactly
    else:
        if value_init == "forward":
            value = prediction
        elif value_init == "zeros":
            value = jnp.zeros_like(prediction)
        else:
            assert drawn is not None
            value = jnp.asarray(drawn, prediction.dtype)
        new = value if latent == "value" else value - prediction
    return NewLatent(new, forward=starts_at_prediction(value_init, energy))


def value_of(latent_kind: str, latent: Array, prediction: Array) -> Array:
    """The node's value from its latent: ``v``, or ``mu + e`` for ``latent='error'``."""
    return latent if latent_kind == "value" else prediction + latent


def draw(key: Array, path: str, like: Array, stddev: float) -> Array:
    """The value of a ``value_init='normal'`` node: ``stddev * N(0, I)``, shaped as ``like``.

    The one rule of both paths: the key is the :data:`~flax_pc.NOISE` key
    folded with a constant and then with the CRC-32 of ``path``, the latent's
    ``'/'``-joined path in the :data:`~flax_pc.NODES` collection
    (``'node/value'``). A node stacked by ``nn.scan`` (or ``nnx.vmap`` and
    ``nnx.scan``) is one latent ``[L, B, ...]``, drawn at once: a value per layer.
    """
    key = jax.random.fold_in(jax.random.fold_in(key, _DRAW_SALT), zlib.crc32(path.encode()))
    return stddev * jax.random.normal(key, jnp.shape(like), jnp.result_type(like))


def drawn_values(new_nodes: PyTree, rngs: Mapping[str, Array] | None, stream: str) -> PyTree:
    """The :class:`DrawnValue`\\ s for the placeholders of ``new_nodes``; ``None`` for none.

    Args:
      new_nodes: the :data:`~flax_pc.NODES` collection of a pass that made the
        latents (boxed in :class:`NewLatent`).
      rngs: the ``rngs`` of that pass.
      stream: the name of the noise stream, whose key the values are drawn from.
    """
    flat = traverse_util.flatten_dict(dict(new_nodes)) if new_nodes else {}
    asked: dict[tuple[Any, ...], tuple[Array, float]] = {}
    for path, box in flat.items():
        if isinstance(box, NewLatent) and box.draw_stddev is not None:
            asked[path] = (box.value, box.draw_stddev)
    if not asked:
        return None
    key = (rngs or {}).get(stream)
    if key is None:
        raise ValueError(missing_key(_path(next(iter(asked))[:-1]), stream))
    drawn = {
        path: DrawnValue(draw(key, _path(path), placeholder, stddev))
        for path, (placeholder, stddev) in asked.items()
    }
    return traverse_util.unflatten_dict(drawn)


def _path(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


# --- Checks and errors -----------------------------------------------------------


def check_latent_shape(
    path: str, latent_kind: str, latent: Array, prediction: Array, init_nodes: str
) -> None:
    """Raises if a stored latent does not have the prediction's shape."""
    if jnp.shape(latent) != jnp.shape(prediction):
        raise ValueError(
            f"PCNode at {path}: the stored {latent_kind} has shape {tuple(jnp.shape(latent))} "
            f"but the prediction has shape {tuple(jnp.shape(prediction))}. The nodes come "
            "from a batch of another size (or another model); make new ones for this batch "
            f"with {init_nodes}."
        )


def check_energy_shape(path: str, node_energy: Array, prediction: Array) -> None:
    """Raises unless the node's energy is one number per example, ``[B]``."""
    if jnp.shape(node_energy) != jnp.shape(prediction)[:1]:
        raise ValueError(
            f"PCNode at {path}: its energy returned shape {tuple(jnp.shape(node_energy))}; "
            f"an energy returns one number per example, [B] = {jnp.shape(prediction)[:1]} "
            "(sum over the features)."
        )


def called_twice(path: str) -> ValueError:
    """The error of a node instance called a second time in one pass."""
    return ValueError(
        f"PCNode at {path} was called twice in one pass. A node holds one value, so two "
        "call sites would share it (and its energy would be wrong); create one PCNode per "
        "call site, e.g. one node per layer made inside the loop over the layers rather "
        "than one instance made before it."
    )


def missing_nodes(path: str, latent_kind: str, make_nodes: str) -> ValueError:
    """The error of a node asked for its energy with no latent for the batch.

    Args:
      make_nodes: how to make and pass the nodes on the caller's path.
    """
    return ValueError(
        f"PCNode at {path}: energies were asked for but no value nodes were given: this "
        f"node has no {latent_kind} for the batch. {make_nodes}"
    )


def missing_key(path: str, stream: str) -> str:
    """The message of a ``value_init='normal'`` node initialised without a noise key."""
    return (
        f"PCNode at {path} (value_init='normal') draws its initial value from the RNG "
        f"stream {stream!r}, but no key was given for it: pass rng=key (or "
        f"rng={{{stream!r}: key, ...}}) to flax_pc.init_nodes, train_step or "
        "train_epoch; for an NNX model, rngs= to fpc.nnx.init_nodes or fpc.nnx.train_step "
        f"(an nnx.Rngs with a {stream!r} or default stream, or a key)."
    )
