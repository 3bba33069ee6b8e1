"""Rows of images as one PNG (``samples.png`` of both examples): a label per row."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402

#: Colour of the pixels an inference did not see (the hidden bottom half).
HIDDEN_RGB = (0.25, 0.35, 0.6)


def _strip(images: np.ndarray, hidden: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """``[n, pixels]`` images in ``[0, 1]`` side by side as one RGB strip, 1-px white gaps."""
    n = images.shape[0]
    height, width = shape
    gray = np.clip(images, 0.0, 1.0).reshape(n, height, width)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if hidden is not None:
        rgb[hidden.reshape(n, height, width).astype(bool)] = HIDDEN_RGB
    gap = np.ones((n, height, 1, 3))
    return np.concatenate([rgb, gap], axis=2).transpose(1, 0, 2, 3).reshape(height, -1, 3)[:, :-1]


def plot_samples(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    path: str | pathlib.Path,
    image_shape: tuple[int, int] = (28, 28),
    title: str = "",
) -> None:
    """Draws one labelled row of images per entry of ``rows`` into a PNG at ``path``.

    Args:
      rows: ``(label, images [n, pixels] in [0, 1], hidden)``; ``hidden`` is
        ``None`` or a ``[n, pixels]`` 0/1 array of pixels to paint in
        :data:`HIDDEN_RGB` (those the model did not observe).
      path: the PNG's path.
      image_shape: ``(height, width)`` of one image.
      title: the figure's title.
    """
    columns = max(len(images) for _, images, _ in rows)
    label_width, image_width, row_height, title_height = 1.3, 0.75, 0.85, 0.45  # inches
    width = label_width + image_width * columns + 0.1
    height = row_height * len(rows) + title_height
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, height), squeeze=False)
    # Fixed margins, not tight_layout: the labels get their own column at the left.
    fig.subplots_adjust(
        left=label_width / width,
        right=1 - 0.1 / width,
        top=1 - title_height / height,
        bottom=0.05 / height,
        hspace=0.08,
    )
    for ax, (label, images, hidden) in zip(axes[:, 0], rows):
        ax.imshow(_strip(np.asarray(images), hidden, image_shape), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    fig.savefig(path, dpi=100)
    plt.close(fig)
