"""Temporal predictive coding (examples/temporal): tracking a noisy system, memorising sequences.

Tracking: a 2-D rotation (0.1 rad per step, damped by 0.99) with process noise
of variance 0.1, observed through a random 10 x 2 projection with noise of
variance 0.02; tPC filters it with the true matrices, then learns them from a
2000-step run (4 passes, a weight step per time step), and is scored against
a Kalman filter on another 1000-step run.

Sequence memory (Tang et al., 2023): a 2-layer tPC (latent 256, tanh) memorises
a sequence of 10 MNIST digits (0 to 9) from a fixed random initial latent (100
SGD node steps of 0.01 per frame, a weight step per frame, 200 passes), then a
30-frame sequence of the same 10 images in three orders (600 passes); each is
recalled from the initial latent alone and read by an MLP classifier trained
by backprop in the script.

This file defines and documents every field (one comment per field: its type
and allowed values, then its meaning). Override any field on the command line:
``--config.sequence_epochs=100``.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """The hyperparameters of the temporal example."""
    config = ml_collections.ConfigDict()

    # Data (the frames of the memorised sequences, and the classifier's training set).
    # str: 'mnist', 'fashion_mnist' or 'synthetic' (noisy blobs per class: a stand-in, no files).
    config.dataset = "mnist"
    # str or None: a folder with the four IDX .gz files (offline runs); None loads `dataset`
    # from TFDS.
    config.data_dir = config_dict.placeholder(str)
    # int > 0: training examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_train_size = 1024
    # int > 0: test examples of dataset='synthetic' (ignored otherwise).
    config.synthetic_test_size = 256

    # Tracking: the system.
    # float: the rotation of the hidden state per step, in radians.
    config.angle = 0.1
    # float in (0, 1]: the factor that scales the state each step (1: a pure rotation).
    config.damping = 0.99
    # float > 0: Q, the variance of the process noise (each of the 2 state dimensions).
    config.process_noise = 0.1
    # float > 0: R, the variance of the observation noise (each observed dimension).
    config.observation_noise = 0.02
    # int >= 2: D, the number of observed dimensions (the projection C is D x 2).
    config.observation_size = 10
    # int > 0: steps of the run the learning tPC trains on.
    config.train_length = 2000
    # int > 0: steps of the run every filter is scored on (another run of the same system).
    config.test_length = 1000

    # Tracking: the tPC filter.
    # int > 0: the most node steps per time step; inference stops before once rms(dF/dz)
    # <= tracking_tolerance.
    config.tracking_inference_steps = 200
    # float > 0: the tolerance of each time step's inference (inference to equilibrium).
    config.tracking_tolerance = 1e-5
    # float > 0: the SGD learning rate of the latent node.
    config.tracking_node_learning_rate = 0.05
    # float > 0: AdamW learning rate of A and C when tPC learns them.
    config.tracking_learning_rate = 3e-3
    # float >= 0: AdamW's decoupled weight decay of C (not A) when tPC learns them: it keeps
    # the latent's scale (without it C grows, the latent shrinks and the dynamics' prior fades).
    config.tracking_weight_decay = 0.1
    # int > 0: passes over the training run (a weight step per time step).
    config.tracking_epochs = 4

    # Sequence memory: the model and its training.
    # int > 0: the size of the latent z (the hidden layer).
    config.hidden_size = 256
    # int > 0: node steps per frame.
    config.inference_steps = 100
    # float > 0: the SGD learning rate of the latent node.
    config.node_learning_rate = 0.01
    # float > 0: the SGD learning rate of the weights (one step per frame).
    config.learning_rate = 0.01
    # float >= 0: the L2 penalty (a Gaussian prior) on the decoder's weights, added to their
    # gradient: it keeps the latent's scale (without it the latents shrink and recall fails).
    config.decoder_weight_decay = 0.1
    # int > 0: passes over the 10-frame sequence.
    config.sequence_epochs = 200
    # int > 0, a multiple of 10: frames of the long sequence (the 10 images of the first
    # sequence, each repeated, in a new random order every 10 frames).
    config.long_sequence_length = 30
    # int > 0: passes over the long sequence.
    config.long_sequence_epochs = 600

    # The classifier that reads the recalled frames (an MLP trained by backprop, Adam).
    # int > 0: passes over the training set.
    config.classifier_epochs = 1
    # int > 0: examples per Adam step.
    config.classifier_batch_size = 128
    # float > 0: Adam's learning rate.
    config.classifier_learning_rate = 1e-3

    # int >= 0: seeds the noise of the runs, the weights, the initial latent and the choice
    # of the frames.
    config.seed = 0

    return config
