"""A tiny synthetic run for the tests: no files, no network, seconds on a CPU."""

import ml_collections

from configs import default as default_lib


def get_config() -> ml_collections.ConfigDict:
    """Tiny hyperparameters for a fast end-to-end test."""
    config = default_lib.get_config()

    # No files, no network.
    config.dataset = "synthetic"
    # 8 batches of 64 per epoch: seconds on a CPU.
    config.synthetic_train_size = 512
    # Not a multiple of eval_batch_size: the evaluation's last chunk is padded.
    config.synthetic_test_size = 120

    # Tiny models, so that tests that switch --config.model stay fast too.
    config.hidden_sizes = (32, 32)
    # Tiny, as hidden_sizes.
    config.conv_features = (4, 8)
    # Tiny, as hidden_sizes.
    config.resnet_stem_features = 2
    # Tiny, as hidden_sizes: two stages only.
    config.resnet_stage_features = (2, 4)

    # Several steps per epoch on the small training set.
    config.batch_size = 64
    # Several chunks (see synthetic_test_size).
    config.eval_batch_size = 50
    # Enough epochs to test resuming and checkpoints_to_keep.
    config.num_epochs = 3
    # Fewer than num_epochs: the tests see old checkpoints deleted.
    config.checkpoints_to_keep = 2

    return config
