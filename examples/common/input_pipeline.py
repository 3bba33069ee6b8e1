"""MNIST-like data as whole numpy arrays: from TFDS, from IDX files (``idx_files.py``), or
synthetic.

Every source gives the same :class:`Splits`: images ``[N, 28, 28, 1]`` float32
in ``[0, 1]``, labels ``[N]`` int32. The splits are small (60k + 10k images), so
training keeps them on the device whole; with several processes, each keeps
its share (:func:`process_share`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, NamedTuple

import jax
import numpy as np

from examples.common.workdir import ConfigError, UserError

DATASETS = ("mnist", "fashion_mnist", "synthetic")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


class DataError(UserError):
    """The data cannot be loaded; the message says what to fix."""


class Splits(NamedTuple):
    """A training and a test split, as numpy arrays."""

    train_images: np.ndarray  # [N, 28, 28, 1] float32 in [0, 1]
    train_labels: np.ndarray  # [N] int32 in [0, NUM_CLASSES)
    test_images: np.ndarray
    test_labels: np.ndarray


def load(dataset: str, *, data_dir: str | None = None, synthetic_sizes=(1024, 256)) -> Splits:
    """``dataset`` ('mnist', 'fashion_mnist' or 'synthetic'): from the four IDX files in
    ``data_dir`` (numpy alone), or from TFDS when ``data_dir`` is ``None``.

    Raises:
      DataError: the data is missing, corrupt, or cannot be downloaded.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {DATASETS}.")
    if dataset == "synthetic":
        return synthetic(*synthetic_sizes)
    if data_dir:
        from examples.common import idx_files  # imported only for a data_dir

        return idx_files.read(data_dir)
    return load_tfds(dataset)


def load_splits(config: Any, num_devices: int) -> tuple[Splits, int]:
    """``(splits, num_train)``: ``config.dataset``, and the most training examples that split
    evenly over ``num_devices``.

    Raises:
      ConfigError: ``config.batch_size`` does not split over the devices, or
        is larger than the training set.
      DataError: the data cannot be loaded.
    """
    if config.batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size = {config.batch_size} cannot be split over the {num_devices} "
            f"devices of this run: use a multiple of {num_devices}."
        )
    sizes = (config.synthetic_train_size, config.synthetic_test_size)
    splits = load(config.dataset, data_dir=config.data_dir or None, synthetic_sizes=sizes)
    num_train = len(splits.train_images) - len(splits.train_images) % num_devices
    if config.batch_size > num_train:
        raise ConfigError(
            f"config.batch_size = {config.batch_size} is larger than the training set "
            f"({num_train} examples)."
        )
    return splits, num_train


def process_share(arrays: Any) -> Any:
    """This process's contiguous share of the rows of each array (all of them with one)."""

    def share(array: np.ndarray) -> np.ndarray:
        size = len(array) // jax.process_count()
        return array[jax.process_index() * size : (jax.process_index() + 1) * size]

    return jax.tree_util.tree_map(share, arrays)


def synthetic(num_train: int, num_test: int, seed: int = 0) -> Splits:
    """A learnable stand-in for MNIST in seconds: each class a smooth blob, plus noise.

    The data is fixed by ``seed`` (the same for every training seed).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.2, 0.8, size=(NUM_CLASSES, 2))
    distance = (rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2
    prototypes = np.exp(-distance / 0.02)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
        noise = rng.normal(0.0, 0.3, size=(n, 28, 28))
        return np.clip(prototypes[labels] + noise, 0, 1).astype(np.float32)[..., None], labels

    return Splits(*split(num_train), *split(num_test))


def load_tfds(name: str, tfds_data_dir: str | None = None) -> Splits:
    """``name`` from TFDS (``tfds_data_dir``: TFDS's data folder, by default its own).

    Raises:
      DataError: at once when the data set is not prepared and TFDS's download
        host does not answer, instead of letting TFDS retry for minutes.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")  # TF must not take the accelerator from JAX
    builder = tfds.builder(name, data_dir=tfds_data_dir)
    if not builder.is_prepared():
        if not network_available():
            raise DataError(
                f"TFDS has no prepared {name!r} in {builder.data_dir_root} and cannot download "
                f"it (no network); set data_dir to a folder with the four IDX files, e.g. "
                f"--config.data_dir=path/to/{name}."
            )
        builder.download_and_prepare()
    splits = []
    for split in ("train", "test"):
        # Batches: `batch_size=-1` aborts the process under tfds.testing.mock_data.
        batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))  # pyright: ignore[reportCallIssue]
        images = np.concatenate([b["image"] for b in batches]).astype(np.float32) / 255.0
        splits += [images, np.concatenate([b["label"] for b in batches]).astype(np.int32)]
    return Splits(*splits)


def network_available(timeout: float = 3.0) -> bool:
    """Whether TFDS's download host answers within ``timeout`` seconds."""
    answered = []

    def connect() -> None:
        with contextlib.suppress(OSError):
            socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
            answered.append(True)

    thread = threading.Thread(target=connect, daemon=True)  # bounds the name lookup too
    thread.start()
    thread.join(timeout)
    return bool(answered)
