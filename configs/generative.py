"""A predictive-coding decoder on Fashion-MNIST: a generative model (examples/generative).

Latent 32 (N(0, I) prior, inferred) -> 256 tanh (value node) -> 784 logits,
Bernoulli output energy; T=20 inference steps of SGD with momentum on the
nodes per batch, then one AdamW step on the weights; batch 128, 3 epochs.
Held-out metrics on the first 1000 test images, inferred with 100 smaller steps.

This file defines and documents every field of examples/generative's configs
(one comment per field: its type and allowed values, then its meaning); the
other configs of examples/generative start from ``get_config()`` here and state
only what they change. Override any field on the command line:
``--config.latent_size=16``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The default hyperparameters of the generative example."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'fashion_mnist', 'mnist' or 'synthetic' (noisy blobs: a learnable stand-in, no files).
    config.dataset = "fashion_mnist"
    # str or None: a folder with the four IDX .gz files (offline runs); None loads `dataset`
    # from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_test_size = 256

    # Model.
    # int > 0: size of the latent node z at the top (its prior is N(0, I)).
    config.latent_size = 32
    # tuple of int > 0: widths of the hidden layers from z down, each followed by a value node
    # that holds the pre-activation; () decodes the image linearly from z.
    config.hidden_sizes = (256,)
    # str: hidden activation: tanh, relu, leaky_relu, gelu, silu, elu, sigmoid.
    config.activation = "tanh"
    # str: energy of the clamped image given the output: 'bernoulli' (the output is logits; the
    # images are their sigmoid) or 'squared_error' (the output is the pixels, unit variance).
    config.output_energy = "bernoulli"
    # bool: True: a value node on each hidden layer (inferred; ancestral samples add its
    # unit-variance noise); False: the hidden layers are a function of the latent, the only node.
    config.hidden_nodes = True

    # Predictive coding.
    # str: training's inference: 'sgd' (PC: SGD with node_momentum finds the most likely
    # latents) or 'langevin' (MCPC: fpc.langevin(node_learning_rate, temperature), Langevin steps
    # that sample the latents' posterior; the weight step follows the last sample).
    config.node_optimizer = "sgd"
    # float >= 0: 'langevin' only: the temperature of the Langevin steps (1: the posterior itself;
    # 0: plain SGD).
    config.temperature = 1.0
    # int > 0: T, node updates per training batch (the latent starts at 0 each batch).
    config.inference_steps = 20
    # float > 0: SGD learning rate of the value nodes during training.
    config.node_learning_rate = 0.05
    # float in [0, 1): SGD momentum of the value nodes (0: plain SGD); 'sgd' only.
    config.node_momentum = 0.7

    # Weights.
    # float > 0: AdamW learning rate of the weights.
    config.learning_rate = 1e-3
    # float >= 0: AdamW's decoupled weight decay of the weights: each step multiplies them by
    # 1 - learning_rate * weight_decay (0: plain Adam). It keeps the decoder's weights from
    # growing while the inferred latents shrink below the prior's spread.
    config.weight_decay = 1.0

    # Loop.
    # int > 0: examples per weight update, at most the training set; the epoch's last partial
    # batch is dropped.
    config.batch_size = 128
    # int > 0: passes over the training set (a resumed run trains up to this many).
    config.num_epochs = 3
    # int >= 0: seeds the initial weights, the data order, the test noise and the prior samples.
    config.seed = 0
    # int > 0: orbax checkpoints kept in workdir/checkpoints (one is saved per epoch).
    config.checkpoints_to_keep = 3

    # Evaluation (after every epoch).
    # int > 0 (at most the test set): the first eval_size test images are reconstructed,
    # half-masked and denoised.
    config.eval_size = 1000
    # int > 0: node updates when inferring a test image's latent, from the prior mean (0).
    config.eval_inference_steps = 100
    # float > 0: SGD learning rate of the value nodes at test time (smaller than in training:
    # test-time inference must converge; training's larger steps oscillate on trained weights).
    config.eval_node_learning_rate = 0.01
    # float in [0, 1): SGD momentum of the value nodes at test time.
    config.eval_node_momentum = 0.9
    # float >= 0: standard deviation of the Gaussian noise added to the test images to denoise
    # (the noisy images are clipped to [0, 1]).
    config.noise_stddev = 0.3
    # int > 0 (at most eval_size): images per row of samples.png.
    config.grid_columns = 10
    # int > 0: after training, images sampled from the model (ancestrally) and scored by a
    # classifier trained by backprop on the training set (scores.json; the first 100 in
    # generated.png).
    config.score_samples = 10000

    return config
