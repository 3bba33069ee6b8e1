"""Associative memory (examples/memory): a generative PC network stores images, retrieves them.

For each number N of memories (50, 100, 250, 500 MNIST training images, each
set inside the next), a generative PC network (latent 64 with a weak N(0, 100 I)
prior -> 512 tanh -> 784 pixels) learns to generate them: every image keeps its
latent from one pass to the next, 10 SGD node steps then one Adam step (2e-3)
per pass (full batch, 1000 passes, the learning rate decayed by a cosine over
the last 250). It then retrieves every image from its top half alone and from a noisy
copy (Gaussian noise of std 0.2, clipped to [0, 1]) by 500 node steps from the
prior mean, the cue clamped where it is known. A retrieval is correct if the
retrieved image's mean squared error per pixel to the stored one is below 0.01.
Baselines on the same cues: a Hopfield network (Storkey rule, binarised images)
and a modern Hopfield network (beta 10).

Every field is documented here (one comment per field: its type and allowed
values, then its meaning). Override any field on the command line:
``--config.memories="(50,100)"``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The hyperparameters of the associative memory example."""
    config = ml_collections.ConfigDict()

    # Data.
    # str: 'mnist', 'fashion_mnist' or 'synthetic' (noisy blobs per class: a stand-in, no files).
    config.dataset = "mnist"
    # str or None: a folder with the four IDX .gz files (offline runs); None loads `dataset`
    # from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic' (ignored otherwise; unused here).
    config.synthetic_test_size = 256
    # tuple of int > 0: the numbers N of images to store, each a run of its own; the images are
    # the first N of one random order of the training set (at most its size).
    config.memories = (50, 100, 250, 500)

    # The PC network.
    # int > 0: the size of the latent z.
    config.latent_size = 64
    # int > 0: the width of the decoder's hidden (tanh) layer.
    config.hidden_size = 512
    # float > 0: the precision of the latent's Gaussian prior (its energy precision/2 |z|^2).
    config.prior_precision = 0.01

    # Storing: every image keeps its latent from pass to pass (full batch).
    # int > 0: passes over the images (a weight step each).
    config.epochs = 1000
    # int > 0: node steps per pass, from where the last pass left the latents.
    config.inference_steps = 10
    # float > 0: SGD learning rate of the latent nodes.
    config.node_learning_rate = 0.1
    # float > 0: Adam's learning rate of the weights (constant, then decayed: decay_fraction).
    config.learning_rate = 2e-3
    # float in (0, 1]: the fraction of the passes, at the end, over which the learning rate
    # decays to 0 by a cosine (a constant rate leaves the energy spiking now and then).
    config.decay_fraction = 0.25

    # Retrieving: inference from the prior mean with the cue clamped where it is known.
    # int > 0: node steps.
    config.retrieval_steps = 500
    # float > 0: SGD learning rate of the latent nodes.
    config.retrieval_node_learning_rate = 0.05
    # float >= 0: standard deviation of the Gaussian noise of the noisy cues (clipped to [0, 1]).
    config.noise_stddev = 0.2
    # float > 0: a retrieval is correct if its mean squared error per pixel to the stored
    # image is below this (binarised images for the classical Hopfield network).
    config.threshold = 0.01

    # The baselines.
    # float > 0: the inverse temperature of the modern Hopfield network.
    config.hopfield_beta = 10.0
    # int > 0: asynchronous sweeps over the units of the classical Hopfield network.
    config.hopfield_sweeps = 10

    # int >= 0: seeds the choice of the images, the weights and the noise.
    config.seed = 0

    return config
