"""μPC: the published layer scalings, and ScaledDense."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import flax_pc as fpc

INPUT, WIDTH, DEPTH, CLASSES = 5, 3, 4, 2


class ResidualMLP(nn.Module):
    """The μPC network of jpc's ``make_mlp(param_type='mupc')``, built from flax_pc's parts."""

    @nn.compact
    def __call__(self, x):
        scale = fpc.mupc_scalings(x.shape[-1], WIDTH, DEPTH)
        x = fpc.PCNode()(fpc.ScaledDense(WIDTH, scale.input)(x))
        for _ in range(DEPTH - 2):
            x = fpc.PCNode()(x + fpc.ScaledDense(WIDTH, scale.hidden)(nn.relu(x)))
        return fpc.ScaledDense(CLASSES, scale.output)(nn.relu(x))


def test_scalings_are_the_published_ones():
    scale = fpc.mupc_scalings(input_features=784, width=128, depth=64)
    assert scale.input == pytest.approx(1 / 28)
    assert scale.hidden == pytest.approx(1 / math.sqrt(128 * 64))
    assert scale.output == pytest.approx(1 / 128)


def test_forward_pass_matches_the_formula_by_hand():
    x = np.random.default_rng(0).normal(size=(7, INPUT))
    model = ResidualMLP()
    params = model.init(jax.random.key(0), jnp.asarray(x, jnp.float32))["params"]
    kernels = [np.asarray(params[f"ScaledDense_{i}"]["kernel"], np.float64) for i in range(DEPTH)]
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = x @ kernels[0] / math.sqrt(INPUT)
    for kernel in kernels[1:-1]:
        h = h + relu(h) @ kernel / math.sqrt(WIDTH * DEPTH)
    expected = relu(h) @ kernels[-1] / WIDTH
    output = model.apply({"params": params}, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(output), expected, rtol=1e-5, atol=1e-6)
    assert set(params["ScaledDense_0"]) == {"kernel"}  # μPC: no bias


def test_kernels_start_standard_normal_and_bias_is_optional():
    layer = fpc.ScaledDense(400, scale=0.5, use_bias=True)
    params = layer.init(jax.random.key(1), jnp.ones((2, 300)))["params"]
    kernel = np.asarray(params["kernel"])
    assert kernel.shape == (300, 400)
    assert abs(kernel.std() - 1.0) < 0.01 and abs(kernel.mean()) < 0.01
    params = {"kernel": params["kernel"], "bias": jnp.full((400,), 2.0)}
    x = jax.random.normal(jax.random.key(2), (2, 300))
    np.testing.assert_allclose(
        np.asarray(layer.apply({"params": params}, x)),
        0.5 * x @ params["kernel"] + 2.0,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"input_features": 784, "width": 128, "depth": 1}, "depth counts the input"),
        ({"input_features": 784, "width": 0, "depth": 8}, "width must be an int >= 1"),
        ({"input_features": 78.4, "width": 128, "depth": 8}, "input_features must be an int"),
    ],
)
def test_bad_scalings(arguments, message):
    with pytest.raises(ValueError, match=message):
        fpc.mupc_scalings(**arguments)
