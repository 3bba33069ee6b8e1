"""Small linen models written as Flax's examples write them (lm1b, ViT, SST-2, VAE, ResNet).

Most have no ``PCNode``: they are what a user brings to ``fpc.with_nodes``. The
``Twin*`` and ``PC*`` models place the nodes by hand (the twins exactly where
``with_nodes`` puts them, with the same params tree), to check it against.
"""

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

import flax_pc as fpc

HEADS, QKV = 2, 8  # attention: 2 heads of 4 features


class TransformerBlock(nn.Module):
    """A pre-LayerNorm encoder block (lm1b, ViT): self-attention and an MLP, residual."""

    mlp: int = 16

    @nn.compact
    def __call__(self, x):
        y = nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=QKV)(nn.LayerNorm()(x))
        x = x + y
        y = nn.gelu(nn.Dense(self.mlp, name="mlp_in")(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1], name="mlp_out")(y)


class TransformerClassifier(nn.Module):
    """Tokens ``[B, L, F]`` -> embedding -> encoder block -> LayerNorm -> mean -> head.

    ``hand_written_nodes``: the twin with nodes by hand where ``with_nodes`` puts them.
    """

    width: int = 8
    classes: int = 3
    hand_written_nodes: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width, name="embedding")(x)
        x = (TwinBlock if self.hand_written_nodes else TransformerBlock)(name="block")(x)
        x = jnp.mean(nn.LayerNorm(name="final_norm")(x), axis=1)
        if self.hand_written_nodes:
            x = fpc.PCNode(name="head_node")(x)
        return nn.Dense(self.classes, name="head")(x)


class TwinAttention(nn.Module):
    """Linen's ``MultiHeadDotProductAttention`` written out, with value nodes by hand."""

    @nn.compact
    def __call__(self, x):
        dense = functools.partial(nn.DenseGeneral, axis=-1, features=(HEADS, QKV // HEADS))
        x = fpc.PCNode(name="qkv_node")(x)  # one activation read by query, key and value
        query, key, value = dense(name="query")(x), dense(name="key")(x), dense(name="value")(x)
        h = fpc.PCNode(name="out_node")(nn.dot_product_attention(query, key, value))
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(h)


class TwinBlock(nn.Module):
    mlp: int = 16

    @nn.compact
    def __call__(self, x):
        y = TwinAttention(name="MultiHeadDotProductAttention_0")(nn.LayerNorm()(x))
        x = x + y
        h = fpc.PCNode(name="mlp_in_node")(nn.LayerNorm()(x))
        h = fpc.PCNode(name="mlp_hidden_node")(nn.gelu(nn.Dense(self.mlp, name="mlp_in")(h)))
        return x + nn.Dense(x.shape[-1], name="mlp_out")(h)


ATTENTION = "block/MultiHeadDotProductAttention_0"
#: with_nodes' node -> the twin's, ``'/'``-joined paths in the NODES collection.
TWIN_NODES = {
    f"{ATTENTION}/query/input": f"{ATTENTION}/qkv_node",
    f"{ATTENTION}/out/input": f"{ATTENTION}/out_node",
    "block/mlp_in/input": "block/mlp_in_node",
    "block/mlp_out/input": "block/mlp_hidden_node",
    "head/input": "head_node",
}


class DiscardedHead(nn.Module):
    """big_vision style: the head is also called on a second tensor, whose result is dropped."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(8)(x))
        head = nn.Dense(3, name="head")
        _ = head(nn.tanh(nn.Dense(8, name="side")(h)))  # computed, never used
        return head(h)


class TwinDiscardedHead(nn.Module):
    """``DiscardedHead`` with its one node by hand (its params tree is the same)."""

    @nn.compact
    def __call__(self, x):
        h = fpc.PCNode(name="node")(nn.tanh(nn.Dense(8)(x)))
        head = nn.Dense(3, name="head")
        _ = head(nn.tanh(nn.Dense(8, name="side")(h)))
        return head(h)


class TwoInputClassifier(nn.Module):
    """Two inputs, SST-2 style: tokens through an embedding, and dense features.

    ``inputs`` is a dict ``{'tokens': [B, L] int, 'features': [B, F]}`` (or, with
    ``as_tuple``, the tuple ``(tokens, features)``).
    """

    vocab: int = 12
    as_tuple: bool = False

    @nn.compact
    def __call__(self, inputs):
        tokens, features = inputs if self.as_tuple else (inputs["tokens"], inputs["features"])
        text = jnp.mean(nn.Embed(self.vocab, 8)(tokens), axis=1)
        text = nn.tanh(nn.Dense(8, name="text")(text))  # its input: the embedding's output
        numbers = nn.tanh(nn.Dense(8, name="numbers")(features))  # its input: the data
        h = nn.tanh(nn.Dense(8, name="joint")(jnp.concatenate([text, numbers], axis=-1)))
        return nn.Dense(3, name="head")(h)


class Encoder(nn.Module):
    latents: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16, name="fc1")(x))
        return nn.Dense(self.latents, name="fc2_mean")(x), nn.Dense(
            self.latents, name="fc2_logvar"
        )(x)


class Decoder(nn.Module):
    features: int = 10

    @nn.compact
    def __call__(self, z):
        z = nn.relu(nn.Dense(16, name="fc1")(z))
        return nn.Dense(self.features, name="fc2")(z)


class VAE(nn.Module):
    """Flax's VAE example, small: returns the tuple ``(logits, mean, logvar)``."""

    latents: int = 4
    features: int = 10

    @nn.compact
    def __call__(self, x):
        mean, logvar = Encoder(self.latents, name="encoder")(x)
        noise = jax.random.normal(self.make_rng("noise"), logvar.shape)
        z = mean + noise * jnp.exp(0.5 * logvar)
        return Decoder(self.features, name="decoder")(z), mean, logvar


def vae_energy(x, output):
    """The VAE's negative ELBO per example, from its tuple output: the custom output energy."""
    logits, mean, logvar = output
    kl = -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), axis=-1)
    return fpc.energies.bernoulli(x, logits) + kl


class PCLSTMCell(nn.RNNCellBase):
    """An LSTM cell with a value node on its hidden state: one node per time step."""

    features: int

    @nn.compact
    def __call__(self, carry, x):
        (c, h), _ = nn.LSTMCell(self.features, name="lstm")(carry, x)
        h = fpc.PCNode(name="hidden")(h)  # the next step reads the node's value
        return (c, h), h

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        return nn.LSTMCell(self.features, parent=None).initialize_carry(rng, input_shape)

    @property
    def num_feature_axes(self) -> int:
        return 1


class LSTMClassifier(nn.Module):
    """A sequence classifier, ``[B, T, F] -> [B, classes]``: an LSTM over time, a head.

    ``pc=True`` is the recurrent PC recipe: a ``PCNode`` on the hidden state of
    every step, carried by ``nn.RNN(..., variable_axes={fpc.NODES: 1,
    fpc.ENERGIES: 1})`` (axis 1: the time axis of batch-major sequences).
    ``pc=False`` is the model as Flax's seq2seq example writes it (``nn.LSTMCell``,
    whose gates are ``nn.Dense`` layers).
    """

    hidden: int = 16
    classes: int = 3
    pc: bool = True

    @nn.compact
    def __call__(self, x):
        if self.pc:
            rnn = nn.RNN(
                PCLSTMCell(self.hidden, name="cell"),
                variable_axes={fpc.NODES: 1, fpc.ENERGIES: 1},
                name="rnn",
            )
        else:
            rnn = nn.RNN(nn.LSTMCell(self.hidden, name="cell"), name="rnn")
        h = jnp.asarray(rnn(x))  # [B, L, F]; nn.RNN's return type also allows (carry, out)
        return nn.Dense(self.classes, name="head")(h[:, -1])


class ResNetBlock(nn.Module):
    """Flax's ImageNet ResNet block (conv-BN-relu-conv-BN, projection shortcut), small."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool = True):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        y = nn.relu(norm()(nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)))
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            x = norm(name="norm_proj")(
                nn.Conv(self.features, (1, 1), self.strides, use_bias=False, name="conv_proj")(x)
            )
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A stem conv, two blocks (the second with a projection), pooling and a head."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3), use_bias=False, name="conv_init")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_init")(x))
        x = ResNetBlock(4, name="block1")(x, train)
        x = ResNetBlock(8, strides=2, name="block2")(x, train)
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


class CNN(nn.Module):
    """Flax's MNIST CNN, at a quarter of its width."""

    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
        return nn.Dense(3)(x)
