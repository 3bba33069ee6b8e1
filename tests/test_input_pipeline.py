"""examples/mnist/input_pipeline.py: IDX files, TFDS (mocked), synthetic data."""

import gzip
import hashlib
import pathlib
import time

import numpy as np
import pytest

from examples.common import idx_files, input_pipeline

IMAGES = {"train": 20, "test": 8}


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_idx_dir(folder: pathlib.Path, with_sums: bool = False) -> dict:
    """Writes the four IDX files (and SHA256SUMS); returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in IMAGES.items():
        arrays[(split, "images")] = rng.integers(0, 256, size=(n, 28, 28))
        arrays[(split, "labels")] = np.arange(n) % 10
    for key, name in idx_files.IDX_FILES.items():
        _write_idx(folder / name, arrays[key])
    if with_sums:
        lines = [
            f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
            for name in idx_files.IDX_FILES.values()
        ]
        (folder / "SHA256SUMS").write_text("".join(lines))
    return arrays


@pytest.mark.parametrize("with_sums", [False, True])
def test_reads_idx_files(tmp_path, with_sums):
    arrays = _write_idx_dir(tmp_path, with_sums)
    splits = input_pipeline.load("mnist", data_dir=str(tmp_path))
    assert splits.train_images.shape == (20, 28, 28, 1)
    assert splits.train_images.dtype == np.float32
    assert splits.test_labels.dtype == np.int32
    np.testing.assert_allclose(
        splits.train_images[..., 0], arrays[("train", "images")] / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(splits.test_labels, arrays[("test", "labels")])
    assert 0.0 <= splits.test_images.min() and splits.test_images.max() <= 1.0


def test_missing_files_are_named(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(input_pipeline.DataError, match="lacks t10k-labels-idx1-ubyte.gz"):
        input_pipeline.load("fashion_mnist", data_dir=str(tmp_path))


def test_data_dir_must_be_a_folder(tmp_path):
    with pytest.raises(input_pipeline.DataError, match="is not a folder"):
        input_pipeline.load("mnist", data_dir=str(tmp_path / "nowhere"))


def test_sha256_mismatch(tmp_path):
    _write_idx_dir(tmp_path, with_sums=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 3)
    with pytest.raises(input_pipeline.DataError, match="does not match its SHA-256"):
        input_pipeline.load("mnist", data_dir=str(tmp_path))


def test_malformed_sha256sums(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(input_pipeline.DataError, match="SHA256SUMS:1"):
        input_pipeline.load("mnist", data_dir=str(tmp_path))


def _corrupt_not_gzip(path):
    path.write_bytes(b"plain bytes, not gzip")


def _corrupt_truncated_gzip(path):
    path.write_bytes(path.read_bytes()[:40])


def _corrupt_magic(path: pathlib.Path) -> None:
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 3]) + np.asarray((20, 28, 28), ">u4").tobytes() + bytes(15680))


def _corrupt_size(path: pathlib.Path) -> None:
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + np.asarray((20, 28, 28), ">u4").tobytes() + bytes(100))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_corrupt_not_gzip, "not a readable gzip file"),
        (_corrupt_truncated_gzip, "not a readable gzip file"),
        (_corrupt_magic, "bad magic number"),
        (_corrupt_size, "truncated or padded"),
    ],
)
def test_corrupt_files(tmp_path, corrupt, message):
    _write_idx_dir(tmp_path)
    corrupt(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(input_pipeline.DataError, match=message):
        input_pipeline.load("mnist", data_dir=str(tmp_path))


def test_inconsistent_files(tmp_path):
    _write_idx_dir(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    with pytest.raises(input_pipeline.DataError, match="8 images but .* 5 labels"):
        input_pipeline.load("mnist", data_dir=str(tmp_path))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(8, 12))
    with pytest.raises(input_pipeline.DataError, match="label 12"):
        input_pipeline.load("mnist", data_dir=str(tmp_path))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((8, 32, 32)))
    with pytest.raises(input_pipeline.DataError, match="32x32"):
        input_pipeline.load("mnist", data_dir=str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(input_pipeline.DataError, match="unknown dataset 'cifar10'"):
        input_pipeline.load("cifar10")


def test_synthetic_is_fixed_and_learnable():
    a = input_pipeline.load("synthetic", synthetic_sizes=(300, 100))
    b = input_pipeline.synthetic(300, 100)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.train_images.shape == (300, 28, 28, 1) and a.test_labels.shape == (100,)
    assert set(np.unique(a.train_labels)) == set(range(10))
    # Nearest class mean separates the classes: the data carries its labels.
    means = np.stack([a.train_images[a.train_labels == k].mean(0) for k in range(10)])
    distances = ((a.test_images[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert np.mean(distances.argmin(1) == a.test_labels) > 0.9


@pytest.mark.tensorflow
def test_tfds_under_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(input_pipeline, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=12):
        splits = input_pipeline.load("fashion_mnist")
    assert splits.train_images.shape == (12, 28, 28, 1)
    assert splits.test_labels.shape == (12,)
    assert splits.train_images.dtype == np.float32 and splits.train_labels.dtype == np.int32
    assert 0.0 <= splits.train_images.min() and splits.train_images.max() <= 1.0
    assert splits.train_images.max() > 0.5  # scaled from uint8, not all zero
    assert splits.train_labels.max() < 10


@pytest.mark.tensorflow
def test_tfds_without_data_or_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(input_pipeline, "network_available", lambda: False)
    start = time.monotonic()
    with pytest.raises(input_pipeline.DataError, match="cannot download it .*data_dir"):
        input_pipeline.load_tfds("mnist", tfds_data_dir=str(tmp_path))
    assert time.monotonic() - start < 60  # TFDS alone retries for minutes
    assert list(tmp_path.iterdir()) == []


def test_network_check_is_bounded():
    start = time.monotonic()
    assert input_pipeline.network_available(timeout=1.0) in (True, False)
    assert time.monotonic() - start < 5
