"""The hidden activations the examples' ``config.activation`` can name."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import linen as nn

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "leaky_relu": nn.leaky_relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "sigmoid": nn.sigmoid,
    "hard_tanh": nn.hard_tanh,
    "linear": lambda x: x,
}
