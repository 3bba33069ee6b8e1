"""The example's pictures: ``tracking.png``, ``recall.png`` and ``recall_long.png``."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_tracking(path: pathlib.Path, states: np.ndarray, estimates: dict, steps: int) -> None:
    """The first ``steps`` states and their estimates: each coordinate against time."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    for i, ax in enumerate(axes):
        ax.plot(states[:steps, i], "k.", markersize=3, label="hidden state")
        for name, value in estimates.items():
            ax.plot(value[:steps, i], label=name.replace("_", " "), linewidth=1)
        ax.set_ylabel(f"x[{i}]")
    axes[0].legend(loc="upper right", fontsize=8, ncol=4)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_recall(
    path: pathlib.Path, frames: np.ndarray, recalled: np.ndarray, right: np.ndarray
) -> None:
    """Stored frames above their recalls, 10 per row pair; a wrongly read recall in red."""
    columns = 10
    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(2 * rows, columns, figsize=(columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for t, (frame, recall) in enumerate(zip(frames, recalled)):
        top, bottom = (
            axes[2 * (t // columns), t % columns],
            axes[2 * (t // columns) + 1, t % columns],
        )
        top.imshow(frame.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        bottom.imshow(np.clip(recall, 0, 1).reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        if not right[t]:
            bottom.set_title("misread", color="red", fontsize=8)
    axes[0, 0].set_title("stored", fontsize=8, loc="left")
    axes[1, 0].set_title("recalled", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
