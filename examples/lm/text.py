"""Characters as integer ids, and windows of ids for training and evaluation (numpy only).

The vocabulary is the sorted set of the training text's characters; a
character of the validation or test text outside it is encoded as one extra
id, :attr:`Vocabulary.unknown_id` (decoded as U+FFFD), which the model also
predicts: it is never a training target, so such a character costs its full
negative log-likelihood in the evaluation rather than being dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

UNKNOWN_CHAR = "\ufffd"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Characters and their ids: ``chars[i]`` is id ``i``; ``unknown_id`` (if ``unknown``)
    stands for any other character.

    Attributes:
      chars: the known characters, sorted.
      unknown: whether id ``len(chars)`` exists, for characters outside ``chars``.
    """

    chars: str
    unknown: bool = False

    @classmethod
    def build(cls, train: str, *others: str) -> Vocabulary:
        """The characters of ``train``; ``unknown`` when the ``others`` (the validation and
        test text) hold others."""
        chars = "".join(sorted(set(train)))
        known = set(chars)
        return cls(chars, any(set(t) - known for t in others))

    @property
    def size(self) -> int:
        """The number of ids (the model's output width)."""
        return len(self.chars) + self.unknown

    @property
    def unknown_id(self) -> int:
        """The id of a character outside ``chars`` (only when ``unknown``)."""
        return len(self.chars)

    def count_unknown(self, text: str) -> int:
        """How many characters of ``text`` are outside the vocabulary."""
        known = set(self.chars)
        return sum(1 for c in text if c not in known)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as ids, ``[len(text)]`` int32.

        Raises:
          ValueError: ``text`` has a character outside the vocabulary and the
            vocabulary has no unknown id.
        """
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        table = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)
        ids = np.minimum(np.searchsorted(table, codes), max(len(table) - 1, 0))
        known = table[ids] == codes if len(table) else np.zeros(len(codes), bool)
        if not known.all() and not self.unknown:
            bad = sorted({chr(c) for c in codes[~known]})
            raise ValueError(f"characters {''.join(bad)!r} are not in the vocabulary.")
        return np.where(known, ids, self.unknown_id).astype(np.int32)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """Ids back to text (the unknown id as U+FFFD): ``decode(encode(t)) == t`` for ``t``
        made of the vocabulary's characters."""
        table = np.array(list(self.chars + UNKNOWN_CHAR))
        return "".join(table[np.asarray(ids, np.int64)].tolist())


def training_windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows: ``(inputs, targets)``, each ``[N, context]`` int32, with
    ``N = (len(ids) - 1) // context`` and ``targets`` the next character of each input.

    Raises:
      ValueError: the text is shorter than one window plus a character.
    """
    num = (len(ids) - 1) // context
    if num < 1:
        raise ValueError(
            f"the text has {len(ids)} characters, fewer than a window of {context} plus one."
        )
    inputs = ids[: num * context].reshape(num, context)
    targets = ids[1 : num * context + 1].reshape(num, context)
    return inputs, targets


def evaluation_windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, ...]:
    """Every next-character prediction of a text, in windows: ``(inputs, targets, mask)``,
    each ``[ceil((len(ids) - 1) / context), context]``; the last window is padded with id 0,
    ``mask`` (float32, 1 or 0) marks the ``len(ids) - 1`` real predictions. Each window
    starts its context afresh."""
    num = max(-(-(len(ids) - 1) // context), 1)
    padded = np.zeros(num * context + 1, np.int32)
    padded[: len(ids)] = ids
    mask = (np.arange(num * context) < len(ids) - 1).astype(np.float32)
    shape = (num, context)
    return padded[:-1].reshape(shape), padded[1:].reshape(shape), mask.reshape(shape)
