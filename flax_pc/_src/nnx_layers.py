"""``fpc.nnx.ScaledLinear``: μPC's scaled layer for NNX models (see :mod:`flax_pc._src.mupc`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from flax_pc._src.types import Array

__all__ = ["ScaledLinear"]

STANDARD_NORMAL = nnx.initializers.normal(stddev=1.0)
ZEROS = nnx.initializers.zeros_init()


class ScaledLinear(nnx.Module):
    """A linear layer whose output is multiplied by a fixed ``scale``: ``scale * (x W) + b``.

    The NNX twin of :class:`flax_pc.ScaledDense`: with the default ``N(0, 1)``
    kernel and ``scale`` from :func:`flax_pc.mupc_scalings` it is a μPC layer.
    The scale is a constant of the architecture, not a parameter.

    Args:
      in_features: the input width.
      out_features: the output width.
      scale: the constant the product ``x W`` is multiplied by.
      use_bias: add a bias (unscaled) after the scaled product; μPC uses none.
      kernel_init: initialiser of the kernel ``[in, out]`` (default ``N(0, 1)``).
      bias_init: initialiser of the bias.
      rngs: the ``nnx.Rngs`` the kernel is drawn from (its ``params`` stream).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import flax_pc as fpc
      >>> scales = fpc.mupc_scalings(input_features=4, width=8, depth=3)
      >>> layer = fpc.nnx.ScaledLinear(4, 8, scale=scales.input, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 4))).shape
      (2, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        scale: float = 1.0,
        use_bias: bool = False,
        kernel_init: nnx.Initializer = STANDARD_NORMAL,
        bias_init: nnx.Initializer = ZEROS,
        rngs: nnx.Rngs,
    ):
        self.scale = scale
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None

    def __call__(self, inputs: Array) -> Array:
        """``scale * inputs @ kernel (+ bias)``: ``[..., in] -> [..., out]``."""
        outputs = self.scale * jnp.dot(inputs, self.kernel[...].astype(inputs.dtype))
        if self.bias is not None:
            outputs = outputs + self.bias[...].astype(inputs.dtype)
        return outputs
