"""A tiny synthetic run of examples/generative for the tests: no files, seconds on a CPU."""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """Tiny hyperparameters for a fast end-to-end test."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'fashion_mnist', 'mnist' or 'synthetic' (a learnable stand-in, no files).
    config.dataset = "synthetic"
    # str or None: a folder with the four IDX .gz files (offline runs); None loads from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 512
    # int > 0: test examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_test_size = 128

    # Model.
    # int > 0: size of the latent node z at the top (its prior is N(0, I)).
    config.latent_size = 8
    # tuple of int > 0: widths of the hidden layers from z down, each followed by a value node;
    # () decodes the image linearly from z.
    config.hidden_sizes = (32,)
    # str: hidden activation: tanh, relu, leaky_relu, gelu, silu, elu, sigmoid.
    config.activation = "tanh"
    # str: energy of the clamped image given the output: 'bernoulli' (the output is logits)
    # or 'squared_error' (the output is the pixels, unit variance).
    config.output_energy = "bernoulli"

    # Predictive coding.
    # int > 0: T, node updates per training batch (the latent starts at 0 each batch).
    config.inference_steps = 10
    # float > 0: SGD learning rate of the value nodes during training.
    config.node_learning_rate = 0.05
    # float in [0, 1): SGD momentum of the value nodes (0: plain SGD).
    config.node_momentum = 0.7

    # Weights.
    # float > 0: AdamW learning rate of the weights.
    config.learning_rate = 1e-2
    # float >= 0: AdamW's decoupled weight decay of the weights (0: plain Adam). It keeps the
    # decoder's weights from growing while the inferred latents shrink below the prior's spread.
    config.weight_decay = 1.0

    # Loop.
    # int > 0: examples per weight update; the epoch's last partial batch is dropped.
    config.batch_size = 64
    # int > 0: passes over the training set (a resumed run trains up to this many).
    config.num_epochs = 5
    # int >= 0: seeds the initial weights, the data order, the test noise and the prior samples.
    config.seed = 0
    # int > 0: orbax checkpoints kept in workdir/checkpoints (one is saved per epoch).
    config.checkpoints_to_keep = 2

    # Evaluation (after every epoch).
    # int > 0: the first eval_size test images are reconstructed, half-masked and denoised.
    config.eval_size = 64
    # int > 0: node updates when inferring a test image's latent, from the prior mean.
    config.eval_inference_steps = 20
    # float > 0: SGD learning rate of the value nodes at test time (smaller than in training:
    # test-time inference must converge; training's larger steps oscillate on trained weights).
    config.eval_node_learning_rate = 0.01
    # float in [0, 1): SGD momentum of the value nodes at test time.
    config.eval_node_momentum = 0.9
    # float >= 0: standard deviation of the Gaussian noise added to the test images to denoise.
    config.noise_stddev = 0.3
    # int > 0 (<= eval_size): images per row of samples.png.
    config.grid_columns = 6

    return config
