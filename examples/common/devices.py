"""The examples' data-parallel plumbing: which process writes, each process's data, host copies.

Both examples train on every device of every process (``fpc.DataParallel``):
the state replicated, every batch split over the devices. In a run of
several processes, each one keeps its share of the training set on its
devices, all of them write the checkpoints (orbax coordinates them), and
process 0 alone writes ``metrics.jsonl``, TensorBoard summaries and plots.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from examples.common import input_pipeline
from examples.common.config_checks import ConfigError


def is_primary() -> bool:
    """Whether this process writes the run's records (process 0)."""
    return jax.process_index() == 0


def check_batch_size(batch_size: int, num_devices: int, name: str = "batch_size") -> None:
    """Raises :class:`ConfigError` unless ``batch_size`` splits evenly over the devices."""
    if batch_size % num_devices:
        raise ConfigError(
            f"config.{name} = {batch_size} cannot be split over the {num_devices} devices of "
            f"this run: use a multiple of {num_devices}."
        )


def usable(num_examples: int, num_devices: int) -> int:
    """The largest number of examples ``<= num_examples`` that splits over the devices."""
    return num_examples - num_examples % num_devices


def load_splits(
    config: ml_collections.ConfigDict, num_devices: int
) -> tuple[input_pipeline.Splits, int]:
    """``config``'s data set, and how many of its training examples the devices share.

    Reads ``config.dataset``, ``data_dir``, ``synthetic_train_size``,
    ``synthetic_test_size`` and ``batch_size``.

    Returns:
      ``(splits, num_train)``: the splits, and the largest number of training
      examples that splits evenly over ``num_devices``.

    Raises:
      ConfigError: ``config.batch_size`` does not split over the devices
        (checked before the data is loaded), or is larger than ``num_train``.
      input_pipeline.DataError: the data cannot be loaded.
    """
    check_batch_size(config.batch_size, num_devices)
    splits = input_pipeline.load(
        config.dataset,
        data_dir=config.data_dir or None,
        synthetic_sizes=(config.synthetic_train_size, config.synthetic_test_size),
    )
    num_train = usable(len(splits.train_images), num_devices)
    if config.batch_size > num_train:
        raise ConfigError(
            f"config.batch_size = {config.batch_size} is larger than the training set "
            f"({num_train} examples)."
        )
    return splits, num_train


def process_share(array: np.ndarray) -> np.ndarray:
    """This process's contiguous share of ``array``'s rows (all of them with one process)."""
    share = len(array) // jax.process_count()
    start = jax.process_index() * share
    return array[start : start + share]


def to_host(tree: Any) -> Any:
    """NumPy copies of ``tree``'s arrays; replicated arrays of a multi-process run too.

    ``jax.device_get`` needs arrays whose every shard this process holds; a
    replicated array of several processes is read from this process's copy.
    """

    def get(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return jax.device_get(leaf)

    return jax.tree_util.tree_map(get, tree)


def describe(num_devices: int) -> str:
    """``'1 device'``, ``'4 devices'``, ``'4 devices in 2 processes'``."""
    text = f"{num_devices} device{'s' if num_devices != 1 else ''}"
    if jax.process_count() > 1:
        text += f" in {jax.process_count()} processes"
    return text
