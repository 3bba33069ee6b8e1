"""Data for the benchmarks: Fashion-MNIST from IDX files, or synthetic images.

Everything is returned as host numpy arrays (float32 images in ``[0, 1]``,
one-hot float32 targets); the benchmark puts them on the device once.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np

from examples.common import idx_files

#: Where the repository keeps the shared data sets (``<repo>/../shared/...``).
DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared/datasets/fashion_mnist"


class Dataset(NamedTuple):
    """A classification data set; images keep their shape (flatten for an MLP)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str


def has_idx_files(data_dir: str | pathlib.Path | None) -> bool:
    """Whether ``data_dir`` holds the four Fashion-MNIST IDX files."""
    if data_dir is None:
        return False
    data_dir = pathlib.Path(data_dir)
    return all((data_dir / name).is_file() for name in idx_files.IDX_FILES.values())


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels ``[N]`` -> float32 one-hot ``[N, num_classes]``."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def fashion_mnist(data_dir: str | pathlib.Path) -> Dataset:
    """Fashion-MNIST, images flattened to ``[N, 784]`` and scaled to ``[0, 1]``."""
    splits = idx_files.read(data_dir)  # checked against the SHA256SUMS beside them
    return Dataset(
        x_train=splits.train_images.reshape(len(splits.train_images), -1),
        y_train=one_hot(splits.train_labels, 10),
        x_test=splits.test_images.reshape(len(splits.test_images), -1),
        y_test=one_hot(splits.test_labels, 10),
        name="fashion_mnist",
    )


def synthetic(
    num_train: int,
    num_test: int,
    image_shape: tuple[int, ...],
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Learnable synthetic images: a random prototype per class plus uniform noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(size=(num_classes, *image_shape)).astype(np.float32)

    def draw(n):
        labels = rng.integers(0, num_classes, size=n)
        noise = rng.uniform(size=(n, *image_shape)).astype(np.float32)
        return 0.5 * prototypes[labels] + 0.5 * noise, one_hot(labels, num_classes)

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return Dataset(x_train, y_train, x_test, y_test, name="synthetic")


def mnist_like(
    data_dir: str | pathlib.Path | None, num_train: int = 60000, num_test: int = 10000
) -> Dataset:
    """Fashion-MNIST from ``data_dir`` when its IDX files are there, else synthetic 784-d data.

    ``num_train`` and ``num_test`` size the synthetic data only.
    """
    if data_dir is not None and has_idx_files(data_dir):
        return fashion_mnist(data_dir)
    return synthetic(num_train, num_test, (784,))
