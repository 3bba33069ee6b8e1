"""A character-level Transformer on Tiny Shakespeare, trained by predictive coding (examples/lm).

A decoder-only pre-LayerNorm Transformer as Flax's lm1b writes it (2 blocks of
width 64, 8 heads, MLP 256, context 128: 116,673 params for 65 characters),
nodes placed by ``fpc.with_nodes``; ePC (inference on the nodes' errors), T=8
SGD steps of 0.5, the cross-entropy output clamped to the next character with a
weak precision (1e-4); Adam 1e-3 on the weights, batch 32, 8 epochs (about 24
minutes on a 2-core CPU). At this precision PC's weight gradient is backprop's
to a cosine of 0.99; examples/lm/README.md shows what stronger settings do.

This file defines and documents every field of examples/lm's configs (type and
allowed values, then meaning); ``lm_bp.py`` starts from ``get_config()`` here.
Override on the command line: ``--config.data_dir=../shared/datasets/tinyshakespeare``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The language model's hyperparameters."""
    config = ml_collections.ConfigDict()

    # Data.
    # str or None: a folder with input.txt (Tiny Shakespeare; checked against a SHA256SUMS
    # beside it), split 90/5/5 as TFDS does; None loads TFDS's tiny_shakespeare.
    config.data_dir = config_dict.placeholder(str)

    # Model.
    # int > 0: decoder blocks (pre-LayerNorm causal self-attention, then an MLP).
    config.num_layers = 2
    # int > 0: embedding and residual width, a multiple of num_heads.
    config.width = 64
    # int > 0: attention heads per block.
    config.num_heads = 8
    # int > 0: hidden width of each block's MLP (Dense, relu, Dense).
    config.mlp_dim = 256
    # int > 0: characters per training window (and the learned positions' count).
    config.context_length = 128

    # Predictive coding.
    # str: 'pc' (inference, then one weight step), 'ipc' (incremental PC) or 'bp' (backprop
    # of the output energy on the same model, nodes ignored).
    config.algorithm = "pc"
    # int >= 0: T, SGD steps on the nodes' latents (values or errors) per batch.
    config.inference_steps = 8
    # float > 0: SGD learning rate of the latents (with latent='value', above 0.02 the
    # energy rises during inference and training diverges).
    config.node_learning_rate = 0.5
    # str: each batch's starting node values: 'forward' (the prediction), 'zeros', 'normal'.
    config.value_init = "forward"
    # str: what inference moves: 'value' (standard PC, the node values) or 'error' (ePC,
    # each node's prediction error; the values follow by a forward pass).
    config.latent = "error"
    # float > 0: the output energy's weight, a precision: cross-entropy times this. Small
    # values keep the nodes near the feed-forward values, where PC's weight gradient is
    # backprop's (the weight gradient is divided by it, so Adam's step keeps its size);
    # at 1e-3 the perplexity turns up after 3 epochs, at 1 after 1 (examples/lm/README.md).
    config.output_precision = 1e-4
    # float in (0, 1] or None: output nudging beta (the probabilities p - beta * (p - target)
    # clamped, weight gradient scaled by 1 / beta; needs output_precision = 1); None: plain
    # clamping.
    config.nudging = config_dict.placeholder(float)

    # Weights.
    # float > 0: Adam's learning rate of the weights.
    config.learning_rate = 1e-3

    # Loop.
    # int > 0: training windows per weight update (the epoch's last partial batch is dropped).
    config.batch_size = 32
    # int > 0: evaluation windows run at once (bounds the evaluation's memory).
    config.eval_batch_size = 64
    # int > 0: passes over the training windows (a resumed run trains up to this many).
    config.num_epochs = 8
    # int >= 0: seeds the initial weights, the window order and the sample.
    config.seed = 0
    # int > 0: checkpoints kept in workdir/checkpoints (one per epoch).
    config.checkpoints_to_keep = 2

    # Sample (after training, into workdir/sample.txt).
    # str: the text the sample continues; its characters must be in the vocabulary.
    config.sample_prompt = "ROMEO:"
    # int >= 0: characters drawn after the prompt.
    config.sample_length = 300
    # float > 0: softmax temperature of the draws (lower: more likely characters).
    config.sample_temperature = 0.8

    return config
