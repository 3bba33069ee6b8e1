"""μPC: the width- and depth-aware parameterisation of deep residual PC networks.

Innocenti et al. (NeurIPS 2025) train residual PC networks of 100+ layers by
drawing every weight from ``N(0, 1)`` and scaling each layer's output instead:

==================================  =========================  ===============
layer                               computes                   scale
==================================  =========================  ===============
input (``D`` features -> ``N``)     ``a * x W``                ``a = 1/sqrt(D)``
residual block ``l`` (``N -> N``)   ``h + b * phi(h) W_l``     ``b = 1/sqrt(N L)``
output (``N`` -> classes)           ``c * phi(h) W``           ``c = 1/N``
==================================  =========================  ===============

``N`` is the width, ``L`` the depth counted in weight layers (input, residual
blocks and output, as in jpc's ``make_mlp(depth=L)``). :func:`mupc_scalings`
gives ``(a, b, c)`` and :class:`ScaledDense` is the linen layer that applies one;
the model itself stays an ordinary linen module with a ``PCNode`` after the
input layer and after every residual block (see ``examples/mnist/models.py``,
``ResidualMLP``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import linen as nn

from flax_pc._src.types import Array

__all__ = ["ScaledDense", "mupc_scalings"]


class MuPCScalings(NamedTuple):
    """The output scales of μPC's three kinds of layer (see the module doc).

    Attributes:
      input: ``1 / sqrt(input_features)``, for the input layer.
      hidden: ``1 / sqrt(width * depth)``, for each residual branch.
      output: ``1 / width``, for the output layer.
    """

    input: float
    hidden: float
    output: float


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mupc_scalings: {name} must be an int >= 1, got {value!r}.")
    return value


def mupc_scalings(input_features: int, width: int, depth: int) -> MuPCScalings:
    """μPC's layer scales for a residual network of ``depth`` weight layers.

    Args:
      input_features: ``D``, the width of the network's input (784 for MNIST).
      width: ``N``, the width of every hidden layer.
      depth: ``L >= 2``, the number of weight layers: the input layer,
        ``L - 2`` residual blocks and the output layer.

    Returns:
      A named tuple ``(input, hidden, output)`` of the scales
      ``(1/sqrt(D), 1/sqrt(N L), 1/N)``.

    Example:
      >>> import flax_pc as fpc
      >>> fpc.mupc_scalings(input_features=784, width=128, depth=8)
      MuPCScalings(input=0.03571428571428571, hidden=0.03125, output=0.0078125)
    """
    input_features = _check_positive_int("input_features", input_features)
    width = _check_positive_int("width", width)
    depth = _check_positive_int("depth", depth)
    if depth < 2:
        raise ValueError(
            f"mupc_scalings: depth counts the input and output layers too, so it must be "
            f">= 2, got {depth}."
        )
    return MuPCScalings(
        input=1.0 / math.sqrt(input_features),
        hidden=1.0 / math.sqrt(width * depth),
        output=1.0 / width,
    )


class ScaledDense(nn.Module):
    """A dense layer whose output is multiplied by a fixed ``scale``: ``scale * (x W) + b``.

    With the default ``N(0, 1)`` kernel and ``scale`` from :func:`mupc_scalings`
    it is a μPC layer; with ``scale=1`` and ``kernel_init=nn.initializers.lecun_normal()``
    it is ``nn.Dense``. The scale is a constant of the architecture, not a
    parameter: the params are ``kernel`` ``[in, features]`` (and ``bias``).

    Attributes:
      features: the output width.
      scale: the constant the product ``x W`` is multiplied by.
      use_bias: add a bias (unscaled) after the scaled product; μPC uses none.
      kernel_init: initialiser of the kernel (default ``N(0, 1)``).
      bias_init: initialiser of the bias.
    """

    features: int
    scale: float = 1.0
    use_bias: bool = False
    kernel_init: nn.initializers.Initializer = nn.initializers.normal(stddev=1.0)
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """``scale * inputs @ kernel (+ bias)``: ``[..., in] -> [..., features]``."""
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))
        outputs = self.scale * jnp.dot(inputs, kernel.astype(inputs.dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            outputs = outputs + bias.astype(inputs.dtype)
        return outputs
