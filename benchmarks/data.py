"""Data for the benchmarks: Fashion-MNIST from IDX files, or synthetic images; windows of
characters (Tiny Shakespeare, or a synthetic text) for the language model.

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
#: Tiny Shakespeare's input.txt, where the repository keeps it.
DEFAULT_TEXT_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared/datasets/tinyshakespeare"


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


def characters(
    text_dir: str | pathlib.Path | None, num_train: int, num_test: int, context: int
) -> tuple[Dataset, int]:
    """Windows of ``context`` characters and their next characters: ``(dataset, vocab size)``.

    ``x``: ids ``[N, context]`` int32; ``y``: one-hot next characters ``[N, context,
    vocab]`` float32; the first ``num_train`` windows of the training text and the first
    ``num_test`` of the test text (``examples/lm``'s split and vocabulary). From
    ``<text_dir>/input.txt`` when it is there, else a synthetic text (random words).
    """
    from examples.lm import input_pipeline, text  # the example's split and tokenisation

    path = pathlib.Path(text_dir) / input_pipeline.TEXT_FILE if text_dir else None
    if path is not None and path.is_file():
        texts = input_pipeline.split_text(input_pipeline.read_text(path.parent))
        name = "tiny_shakespeare"
    else:
        rng = np.random.default_rng(0)
        words = ["".join(rng.choice(list("abcdefghij"), size=5)) for _ in range(50)]
        # 5% of the text is the test text: enough for num_test windows.
        num_words = 25 * (num_train + num_test) * context // 6
        texts = input_pipeline.split_text(" ".join(rng.choice(words, size=num_words)))
        name = "synthetic"
    vocab = text.Vocabulary.build(*texts)
    eye = np.eye(vocab.size, dtype=np.float32)
    x_train, y_train = text.training_windows(vocab.encode(texts.train), context)
    x_test, y_test = text.training_windows(vocab.encode(texts.test), context)
    x_train, y_train = x_train[:num_train], eye[y_train[:num_train]]
    x_test, y_test = x_test[:num_test], eye[y_test[:num_test]]
    return Dataset(x_train, y_train, x_test, y_test, name), vocab.size
