"""``curves.png`` (held-out MSE and energy per epoch) and ``samples.png`` (the image grid)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

#: Colour of the pixels an inference did not see (the hidden bottom half).
HIDDEN_RGB = (0.25, 0.35, 0.6)


def plot_curves(
    records: Sequence[dict[str, Any]], path: str | pathlib.Path, title: str = ""
) -> None:
    """Draws the per-epoch ``records`` of ``metrics.jsonl`` into a PNG at ``path``.

    Two panels: the held-out MSEs (reconstruction, masked-half fill-in against
    the mean image, denoising against the noisy input), and the mean training
    energy per example.
    """
    epochs = [r["epoch"] for r in records]
    fig, (ax_mse, ax_energy) = plt.subplots(1, 2, figsize=(11, 4.2))

    def line(key, style, label, **kwargs):
        values = [r[key] for r in records]
        ax_mse.plot(epochs, values, style, label=label, **kwargs)
        return values

    recon = line("test_mse", "o-", "reconstruction")
    line("masked_mse", "s-", "bottom half from top half")
    line("mean_image_mse", "--", "bottom half: mean image", color="tab:orange", alpha=0.6)
    line("denoised_mse", "^-", "denoised")
    line("noisy_mse", "--", "noisy input", color="tab:green", alpha=0.6)
    ax_mse.annotate(
        f"{recon[-1]:.4f}",
        (epochs[-1], recon[-1]),
        textcoords="offset points",
        xytext=(0, 6),
        ha="right",
    )
    ax_mse.set(xlabel="epoch", ylabel="MSE per pixel", title="Held-out MSE", ylim=(0, None))
    ax_mse.legend(fontsize="small")

    ax_energy.plot(epochs, [r["train_energy"] for r in records], "o-", color="tab:purple")
    ax_energy.set(
        xlabel="epoch", ylabel="energy per example", title="Training energy after inference"
    )
    for ax in (ax_mse, ax_energy):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
