"""A tiny synthetic run of examples/generative for the tests: no files, seconds on a CPU."""

import ml_collections

from configs import generative as generative_lib


def get_config() -> ml_collections.ConfigDict:
    """Tiny hyperparameters for a fast end-to-end test."""
    config = generative_lib.get_config()

    # No files, no network.
    config.dataset = "synthetic"
    # 8 batches of 64 per epoch: seconds on a CPU.
    config.synthetic_train_size = 512
    # Room for eval_size test images (it must fit in the test set).
    config.synthetic_test_size = 128

    # A tiny decoder: fast, and enough for the synthetic blobs.
    config.latent_size = 8
    # Tiny, as latent_size.
    config.hidden_sizes = (32,)

    # Fewer node steps per batch, for speed.
    config.inference_steps = 10
    # Larger steps, so that the tiny run learns within its few weight updates.
    config.learning_rate = 1e-2

    # Several steps per epoch on the small training set.
    config.batch_size = 64
    # Enough epochs to test resuming and checkpoints_to_keep.
    config.num_epochs = 5
    # Fewer than num_epochs: the tests see old checkpoints deleted.
    config.checkpoints_to_keep = 2

    # A small held-out set, for speed.
    config.eval_size = 64
    # Fewer test-time node steps, for speed.
    config.eval_inference_steps = 20
    # A smaller samples.png grid, for the smaller eval_size.
    config.grid_columns = 6
    # A few samples to score, for speed.
    config.score_samples = 200

    return config
