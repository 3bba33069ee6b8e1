"""MNIST-like data as whole numpy arrays: from TFDS, from IDX files, or synthetic.

Every source returns the same :class:`Splits`: images ``[N, 28, 28, 1]``
float32 scaled to ``[0, 1]`` and labels ``[N]`` int32. The splits are small
(60k + 10k images), so training keeps them on the device whole and never
copies a batch from the host; in a run of several processes each keeps its
share (:func:`process_share`).
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import socket
import threading
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from examples.common.config_checks import ConfigError

DATASETS = ("mnist", "fashion_mnist", "synthetic")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

#: The four standard IDX files, by split and part.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
_IDX_UBYTE = 0x08
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataError(Exception):
    """The data cannot be loaded; the message says what to fix."""


class Splits(NamedTuple):
    """A training and a test split, as numpy arrays."""

    train_images: np.ndarray  # [N, 28, 28, 1] float32 in [0, 1]
    train_labels: np.ndarray  # [N] int32 in [0, NUM_CLASSES)
    test_images: np.ndarray
    test_labels: np.ndarray


def load(
    dataset: str,
    *,
    data_dir: str | None = None,
    synthetic_sizes: tuple[int, int] = (1024, 256),
) -> Splits:
    """Loads ``dataset`` ('mnist', 'fashion_mnist' or 'synthetic').

    Args:
      dataset: the data set's name.
      data_dir: a folder with the four IDX files (see :data:`IDX_FILES`), read
        with numpy alone; ``None`` loads ``dataset`` from TFDS instead.
      synthetic_sizes: ``(train, test)`` examples for ``dataset='synthetic'``.

    Raises:
      DataError: the data is missing, corrupt, or cannot be downloaded.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {DATASETS}.")
    if dataset == "synthetic":
        return synthetic(*synthetic_sizes)
    if data_dir:
        return read_idx_dir(data_dir)
    return load_tfds(dataset)


def synthetic(num_train: int, num_test: int, seed: int = 0) -> Splits:
    """A learnable stand-in for MNIST: a noisy blob per class, in seconds.

    Each class has its own smooth prototype image; an example is its class
    prototype plus noise, clipped to ``[0, 1]``. The data is fixed by ``seed``
    (the same for every training seed).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.2, 0.8, size=(NUM_CLASSES, 2))
    prototypes = np.exp(
        -((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2) / 0.02
    )

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
        noise = rng.normal(0.0, 0.3, size=(n, 28, 28))
        images = np.clip(prototypes[labels] + noise, 0.0, 1.0).astype(np.float32)
        return images[..., None], labels

    return Splits(*split(num_train), *split(num_test))


def load_splits(config: ml_collections.ConfigDict, num_devices: int) -> tuple[Splits, int]:
    """``config``'s data set, and how many of its training examples the devices share.

    Reads ``config.dataset``, ``data_dir``, ``synthetic_train_size``,
    ``synthetic_test_size`` and ``batch_size``.

    Returns:
      ``(splits, num_train)``: the splits, and the largest number of training
      examples that splits evenly over ``num_devices``.

    Raises:
      ConfigError: ``config.batch_size`` does not split over the devices
        (checked before the data is loaded), or is larger than ``num_train``.
      DataError: the data cannot be loaded.
    """
    if config.batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size = {config.batch_size} cannot be split over the {num_devices} "
            f"devices of this run: use a multiple of {num_devices}."
        )
    splits = load(
        config.dataset,
        data_dir=config.data_dir or None,
        synthetic_sizes=(config.synthetic_train_size, config.synthetic_test_size),
    )
    num_train = len(splits.train_images) - len(splits.train_images) % num_devices
    if config.batch_size > num_train:
        raise ConfigError(
            f"config.batch_size = {config.batch_size} is larger than the training set "
            f"({num_train} examples)."
        )
    return splits, num_train


def process_share(arrays: Any) -> Any:
    """This process's contiguous share of the rows of each array of ``arrays`` (a pytree).

    With one process, all of them.
    """

    def share(array: np.ndarray) -> np.ndarray:
        size = len(array) // jax.process_count()
        return array[jax.process_index() * size : (jax.process_index() + 1) * size]

    return jax.tree_util.tree_map(share, arrays)


# --- IDX files -------------------------------------------------------------


def read_idx_dir(data_dir: str | pathlib.Path) -> Splits:
    """Reads the four IDX files in ``data_dir`` (MNIST's own format).

    Checks the files' magic numbers and sizes, and their SHA-256 digests when
    ``data_dir`` holds a ``SHA256SUMS`` file (``sha256sum``'s output format).

    Raises:
      DataError: a file is missing, unreadable or inconsistent.
    """
    folder = pathlib.Path(data_dir)
    if not folder.is_dir():
        raise DataError(
            f"data_dir {str(folder)!r} is not a folder; it must hold the IDX files "
            f"{', '.join(IDX_FILES.values())}."
        )
    paths = {key: folder / name for key, name in IDX_FILES.items()}
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise DataError(
            f"data_dir {str(folder)!r} lacks {', '.join(missing)} (it needs the four IDX "
            "files of MNIST or Fashion-MNIST); unset data_dir to load the data set from TFDS."
        )
    _verify_sha256(folder, [path.name for path in paths.values()])
    arrays = {
        key: _read_idx(path, ndim=3 if key[1] == "images" else 1) for key, path in paths.items()
    }

    splits = []
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        image_file, label_file = IDX_FILES[(split, "images")], IDX_FILES[(split, "labels")]
        if images.shape[1:] != IMAGE_SHAPE[:2]:
            raise DataError(
                f"{image_file} holds {images.shape[1]}x{images.shape[2]} images; expected 28x28."
            )
        if len(images) != len(labels) or len(images) == 0:
            raise DataError(
                f"{image_file} holds {len(images)} images but {label_file} holds "
                f"{len(labels)} labels."
            )
        if labels.max() >= NUM_CLASSES:
            raise DataError(f"{label_file} holds label {labels.max()}; expected 0..9.")
        splits += [_scale(images), labels.astype(np.int32)]
    return Splits(*splits)


def _verify_sha256(folder: pathlib.Path, names: list[str]) -> None:
    sums_file = folder / "SHA256SUMS"
    if not sums_file.is_file():
        return
    expected = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{sums_file}:{number} is not a 'sha256  filename' line.")
        expected[parts[1].strip().lstrip("*")] = parts[0].lower()
    for name in names:
        if name in expected:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            if digest != expected[name]:
                raise DataError(
                    f"{folder / name} does not match its SHA-256 in {sums_file}: "
                    "the file is corrupt or not the one listed; download it again."
                )


def _read_idx(path: pathlib.Path, ndim: int) -> np.ndarray:
    """Reads one gzipped IDX file of unsigned bytes with ``ndim`` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}).") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number "
            f"{data[:4].hex() or 'missing'}; expected 0000080{ndim})."
        )
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise DataError(
            f"{path} is truncated or padded: its header promises {size} bytes of data "
            f"({'x'.join(map(str, shape))}), it holds {len(data) - header}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _scale(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]


# --- TFDS --------------------------------------------------------------------


def load_tfds(name: str, tfds_data_dir: str | None = None) -> Splits:
    """Loads ``name`` from TFDS.

    Args:
      name: the TFDS name.
      tfds_data_dir: TFDS's data folder; ``None``: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``.

    Raises:
      DataError: quickly, when the data set is not prepared and cannot be
        downloaded, instead of letting TFDS retry for minutes.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    # TF must not take the accelerator's memory from JAX.
    tf.config.set_visible_devices([], "GPU")
    builder = tfds.builder(name, data_dir=tfds_data_dir)
    if not builder.is_prepared():
        if not network_available():
            raise DataError(
                f"TFDS has no prepared {name!r} in {builder.data_dir_root} and cannot download "
                f"it (no network); set data_dir to a folder with the four IDX files, e.g. "
                f"--config.data_dir=path/to/{name}."
            )
        builder.download_and_prepare()

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        # Iterate: `batch_size=-1` aborts the process under tfds.testing.mock_data.
        # (TFDS's decorated as_dataset hides its parameters from type checkers.)
        dataset = builder.as_dataset(split=split).batch(10_000)  # pyright: ignore[reportCallIssue]
        images, labels = [], []
        for batch in tfds.as_numpy(dataset):
            images.append(batch["image"])
            labels.append(batch["label"])
        return _scale(np.concatenate(images)[..., 0]), np.concatenate(labels).astype(np.int32)

    return Splits(*read("train"), *read("test"))


def network_available(timeout: float = 3.0) -> bool:
    """Whether TFDS's download host answers within ``timeout`` seconds."""
    result = []

    def connect():
        try:
            socket.create_connection(_DOWNLOAD_HOST, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # Name resolution ignores the socket timeout; the thread bounds it too.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
