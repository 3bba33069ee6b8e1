"""``curves.png``: the training and test curves of a run, and its energy per inference step."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, none opened.

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_curves(
    records: Sequence[dict[str, Any]], path: str | pathlib.Path, title: str = ""
) -> None:
    """Draws the per-epoch ``records`` of ``metrics.jsonl`` into a PNG at ``path``.

    Three panels: training and test loss (the output energy of the
    feed-forward prediction), test accuracy, and the mean energy at each
    inference step (one line per epoch: how inference settles, and how the
    settled energy falls as the weights learn).
    """
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc, ax_energy) = plt.subplots(1, 3, figsize=(15, 4.2))

    ax_loss.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in records], "s--", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss (output energy)", title="Loss")
    ax_loss.legend()

    accuracy = [100 * r["test_accuracy"] for r in records]
    ax_acc.plot(epochs, accuracy, "o-", color="tab:green")
    ax_acc.annotate(
        f"{accuracy[-1]:.2f}%",
        (epochs[-1], accuracy[-1]),
        textcoords="offset points",
        xytext=(0, -14),
        ha="right",
    )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")

    colours = plt.cm.viridis([i / max(len(records) - 1, 1) for i in range(len(records))])
    energies = [record["energy_per_step"] for record in records]
    for record, energy, colour in zip(records, energies, colours):
        ax_energy.plot(range(len(energy)), energy, "o-", color=colour, ms=3, label=record["epoch"])
    lowest = min(min(e) for e in energies)
    highest = max(max(e) for e in energies)
    # A log axis only when the energies span decades; else it hides the steps.
    log_scale = lowest > 0 and highest / lowest > 20
    ax_energy.set(
        xlabel="inference step t",
        ylabel="mean energy per example",
        title="Energy during inference",
        yscale="log" if log_scale else "linear",
    )
    ax_energy.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(records) <= 10:
        ax_energy.legend(title="epoch", fontsize="small", ncols=2)
    else:
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=Normalize(epochs[0], epochs[-1]))
        fig.colorbar(mappable, ax=ax_energy, label="epoch")

    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_energy.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
