"""Small models shared by the tests."""

from collections.abc import Sequence

from flax import linen as nn

import flax_pc as fpc


class MLP(nn.Module):
    """Dense -> activation -> PCNode per hidden layer, then a Dense output."""

    features: Sequence[int] = (8, 8)
    outputs: int = 3
    activation: str = "tanh"
    with_nodes: bool = True

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation) if self.activation != "linear" else (lambda h: h)
        for width in self.features:
            x = act(nn.Dense(width)(x))
            if self.with_nodes:
                x = fpc.PCNode()(x)
        return nn.Dense(self.outputs)(x)
