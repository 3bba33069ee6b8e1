"""``curves.png``: the held-out MSEs and the training energy per epoch.

``samples.png`` is drawn by ``examples.common.image_grid``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


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
