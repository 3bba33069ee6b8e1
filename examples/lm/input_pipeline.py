"""Tiny Shakespeare as text, split as TFDS splits it.

The text comes from ``<data_dir>/input.txt`` (checked against a ``SHA256SUMS``
file beside it when there is one) or from TFDS's ``tiny_shakespeare``. Ids and
windows of characters are ``text.py``'s.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import NamedTuple

from examples.common import idx_files
from examples.common.input_pipeline import DataError, network_available

TFDS_NAME = "tiny_shakespeare"
TEXT_FILE = "input.txt"
#: TFDS's split of the 1,115,394 characters of Tiny Shakespeare.
TFDS_SIZES = {"train": 1_003_854, "validation": 55_770, "test": 55_770}
#: The fraction of a text that validation and test each take (TFDS's, rounded to the nearest
#: character: 55,770 of 1,115,394); the training text is the rest, at the start.
HELD_OUT_FRACTION = 0.05


class Texts(NamedTuple):
    """The three splits of a text, in the text's order."""

    train: str
    validation: str
    test: str


def split_text(text: str) -> Texts:
    """TFDS's split of Tiny Shakespeare, for a text of any length.

    Validation and test each get ``round(0.05 * len(text))`` characters (halves
    round up; at least 1), the training text the rest, in this order: for the
    real file, exactly TFDS's 1,003,854 / 55,770 / 55,770.

    Raises:
      DataError: the text is too short to leave a character for each split.
    """
    held_out = max(int(HELD_OUT_FRACTION * len(text) + 0.5), 1)
    num_train = len(text) - 2 * held_out
    if num_train < 1:
        raise DataError(
            f"the text has {len(text)} characters; it needs at least 3 to split into "
            "training, validation and test text (5% each for the last two)."
        )
    return Texts(text[:num_train], text[num_train : num_train + held_out], text[-held_out:])


def read_text(data_dir: str | pathlib.Path) -> str:
    """``<data_dir>/input.txt`` as UTF-8 text, checked against ``SHA256SUMS`` if it is there.

    Raises:
      DataError: the folder or file is missing, corrupt or not UTF-8.
    """
    folder = pathlib.Path(data_dir)
    path = folder / TEXT_FILE
    if not path.is_file():
        raise DataError(
            f"data_dir {str(folder)!r} has no {TEXT_FILE} (Tiny Shakespeare's text); unset "
            "data_dir to load it from TFDS."
        )
    data = path.read_bytes()
    digest = idx_files.listed_sha256(folder / "SHA256SUMS").get(TEXT_FILE)
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise DataError(
            f"{path} does not match its SHA-256 in {folder / 'SHA256SUMS'}: the file is "
            "corrupt or not the one listed; download it again."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}).") from None


def load_tfds(tfds_data_dir: str | None = None) -> Texts:
    """TFDS's ``tiny_shakespeare``: each split is one string.

    Raises:
      DataError: TFDS is not installed, or the data set is not prepared and
        cannot be downloaded (no network).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"loading {TFDS_NAME!r} without data_dir needs tensorflow-datasets (pip install -e "
            "'.[examples]'); or set --config.data_dir to a folder with input.txt."
        ) from None
    builder = tfds.builder(TFDS_NAME, data_dir=tfds_data_dir)
    if not builder.is_prepared():
        if not network_available():
            raise DataError(
                f"TFDS has no prepared {TFDS_NAME!r} in {builder.data_dir_root} and cannot "
                "download it (no network); set --config.data_dir to a folder with input.txt."
            )
        builder.download_and_prepare()
    texts = []
    for split in Texts._fields:
        dataset = builder.as_dataset(split=split)  # pyright: ignore[reportCallIssue]
        (example,) = list(tfds.as_numpy(dataset))  # one example: the whole text
        texts.append(example["text"].decode("utf-8"))
    return Texts(*texts)


def load_texts(data_dir: str | None) -> Texts:
    """The three splits: from ``<data_dir>/input.txt`` (:func:`split_text`), or TFDS's."""
    return split_text(read_text(data_dir)) if data_dir else load_tfds()
