"""The four IDX files of MNIST or Fashion-MNIST (the data sets' own format), read and checked."""

from __future__ import annotations

import gzip
import hashlib
import pathlib

import numpy as np

from examples.common.input_pipeline import IMAGE_SHAPE, NUM_CLASSES, DataError, Splits

#: The four standard IDX files, by split and part.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}


def read(data_dir: str | pathlib.Path) -> Splits:
    """The four IDX files in ``data_dir`` (MNIST's own format), checked.

    Checks each file's magic number and size, the splits' shapes and labels,
    and the SHA-256 digests that a ``SHA256SUMS`` file there lists.

    Raises:
      DataError: a file is missing, unreadable or inconsistent.
    """
    folder = pathlib.Path(data_dir)
    if not folder.is_dir():
        raise DataError(
            f"data_dir {str(folder)!r} is not a folder; it must hold the IDX files "
            f"{', '.join(IDX_FILES.values())}."
        )
    missing = [name for name in IDX_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"data_dir {str(folder)!r} lacks {', '.join(missing)} (it needs the four IDX files "
            "of MNIST or Fashion-MNIST); unset data_dir to load the data set from TFDS."
        )
    digests = listed_sha256(folder / "SHA256SUMS")
    splits = []
    for split in ("train", "test"):
        image_file, label_file = IDX_FILES[(split, "images")], IDX_FILES[(split, "labels")]
        images, labels = (
            _read_idx(folder / name, digests.get(name)) for name in (image_file, label_file)
        )
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[:2]:
            raise DataError(
                f"{image_file} holds {'x'.join(map(str, images.shape[1:]))} images; expected 28x28."
            )
        if labels.ndim != 1 or len(images) != len(labels) or not len(images):
            raise DataError(
                f"{image_file} holds {len(images)} images but {label_file} holds "
                f"{len(labels)} labels."
            )
        if labels.max() >= NUM_CLASSES:
            raise DataError(f"{label_file} holds label {labels.max()}; expected 0..9.")
        splits += [(images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)]
    return Splits(*splits)


def listed_sha256(sums_file: pathlib.Path) -> dict[str, str]:
    """``{file name: digest}`` from ``sha256sum``'s output, if the file exists."""
    if not sums_file.is_file():
        return {}
    digests = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        digest, _, name = line.strip().partition(" ")
        if line.strip() and (len(digest) != 64 or not name.strip()):
            raise DataError(f"{sums_file}:{number} is not a 'sha256  filename' line.")
        digests[name.strip().lstrip("*")] = digest.lower()
    return digests


def _read_idx(path: pathlib.Path, sha256: str | None) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes, checked against its header and ``sha256``."""
    compressed = path.read_bytes()  # read once: hashed, then unzipped
    if sha256 and hashlib.sha256(compressed).hexdigest() != sha256:
        raise DataError(
            f"{path} does not match its SHA-256 in {path.parent / 'SHA256SUMS'}: "
            "the file is corrupt or not the one listed; download it again."
        )
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}).") from None
    ndim = data[3] if len(data) > 3 else 0
    if data[:3] != b"\0\0\x08" or not 1 <= ndim <= 3 or len(data) < 4 + 4 * ndim:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number "
            f"{data[:4].hex() or 'missing'}; expected 0000080<dimensions>)."
        )
    shape = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4"))
    if len(data) - 4 - 4 * ndim != np.prod(shape):
        raise DataError(
            f"{path} is truncated or padded: its header promises {np.prod(shape)} "
            f"bytes ({'x'.join(map(str, shape))}), it holds {len(data) - 4 - 4 * ndim}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
