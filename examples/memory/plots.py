"""``retrievals_<N>.png``: the stored images, the cues, and what each memory retrieved."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: The row labels of the methods.
LABELS = {"cue": "cue", "pc": "PC", "modern_hopfield": "modern Hopfield", "storkey": "Storkey"}


def plot_retrievals(
    path: pathlib.Path, images: np.ndarray, shown: dict[str, dict[str, np.ndarray]], columns: int
) -> None:
    """The first ``columns`` images: stored, then per cue its cue (unknown pixels in blue)
    and each method's retrieval."""
    rows = [("stored", images)]
    for cue, results in shown.items():
        rows += [(f"{cue.replace('_', ' ')}: {LABELS[m]}", value) for m, value in results.items()]
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("lightblue")
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns, 1.05 * len(rows)), squeeze=False)
    for (label, pictures), row in zip(rows, axes):
        for ax, picture in zip(row, pictures[:columns]):
            ax.imshow(picture.reshape(28, 28), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
