"""Plots of a benchmark report: time per epoch and the ratios, per sweep value."""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

COLORS = {
    "flax_pc": "tab:blue",
    "plain_jax": "tab:orange",
    "backprop": "tab:green",
    # The inference loop rolled (``--unroll false|both``).
    "flax_pc_rolled": "tab:cyan",
    "plain_jax_rolled": "tab:red",
}
MARKERS = {"epoch": "o", "batch": "s"}
LINES = {"epoch": "-", "batch": "--"}
SWEEP_KEYS = ("steps", "width", "depth")


def _sweep_key(points: list[dict[str, Any]]) -> str | None:
    return next((k for k in SWEEP_KEYS if k in points[0]), None)


def plot(report: dict[str, Any], path: pathlib.Path, title: str = "") -> None:
    """Writes a two-panel PNG: seconds per epoch, and flax_pc/plain and PC/backprop ratios."""
    points = report["points"]
    key = _sweep_key(points)
    fig, (ax_time, ax_ratio) = plt.subplots(1, 2, figsize=(11, 4.2))
    if key is None:
        _bars(points[0], ax_time, ax_ratio)
    else:
        _lines(points, key, ax_time, ax_ratio)
    batches = points[0]["num_batches"]
    cpu = report["machine"]["device"]
    fig.suptitle(f"{title} — {batches} batches/epoch, median of epochs after the first ({cpu})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plain_ticks(ax, xs):
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _lines(points, key, ax_time, ax_ratio):
    xs = [p[key] for p in points]
    names = list(points[0]["results"])
    spread = []
    for name in names:
        impl, style = name.split("/")
        ys = [p["results"][name]["median_epoch_s"] / p["num_batches"] * 1e3 for p in points]
        spread += ys
        ax_time.plot(xs, ys, LINES[style], marker=MARKERS[style], color=COLORS[impl], label=name)
    ax_time.set(xscale="log", xlabel=key, ylabel="ms per batch (train step)")
    if max(spread) > 10 * min(spread):
        ax_time.set_yscale("log")
        ax_time.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_time.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_time.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax_time.set_ylim(bottom=0)
    _plain_ticks(ax_time, xs)
    ax_time.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8)

    ratio_names = [
        r
        for r in points[0]["ratios"]
        if r.endswith(" s/epoch") and "cpu" not in r and r.split(": ")[0] in LINES
    ]
    for r in ratio_names:
        style, what = r.split(": ")
        what = what.replace(" s/epoch", "")
        color = COLORS["backprop"] if "backprop" in what else COLORS["flax_pc"]
        marker = "^" if what.startswith("plain_jax") else MARKERS[style]
        ys = [p["ratios"][r] for p in points]
        ax_ratio.plot(xs, ys, LINES[style], marker=marker, color=color, label=f"{what} ({style})")
    if all("flops" in p for p in points):
        ys = [p["flops"]["pc_over_backprop"] for p in points]
        ax_ratio.plot(xs, ys, ":", color="gray", marker="x", label="PC/backprop FLOPs (XLA)")
    ax_ratio.axhline(1.0, color="gray", lw=0.8)
    ax_ratio.set(xscale="log", xlabel=key, ylabel="time ratio (paired median)")
    ax_ratio.set_ylim(bottom=0)
    _plain_ticks(ax_ratio, xs)
    ax_ratio.grid(True, alpha=0.3)
    ax_ratio.legend(fontsize=8)


def _bars(point, ax_time, ax_ratio):
    names = list(point["results"])
    ys = [point["results"][n]["median_epoch_s"] / point["num_batches"] for n in names]
    colors = [COLORS[n.split("/")[0]] for n in names]
    ax_time.bar(range(len(names)), ys, color=colors)
    ax_time.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax_time.set_ylabel("s per batch (train step)")
    for i, y in enumerate(ys):
        ax_time.annotate(f"{y:.2f}", (i, y), ha="center", va="bottom", fontsize=8)

    ratio_names = [r for r in point["ratios"] if r.endswith(" s/epoch") and "cpu" not in r]
    values = [point["ratios"][r] for r in ratio_names]
    ax_ratio.barh(range(len(values)), values, color="tab:gray")
    ax_ratio.set_yticks(range(len(values)), [r.replace(" s/epoch", "") for r in ratio_names])
    ax_ratio.axvline(1.0, color="k", lw=0.8)
    if "flops" in point:
        pc_bp = point["flops"]["pc_over_backprop"]
        ax_ratio.axvline(pc_bp, color="gray", ls=":", label=f"PC/backprop FLOPs (XLA) {pc_bp:.2f}")
        ax_ratio.legend(fontsize=8, loc="lower right")
    ax_ratio.set_xlabel("time ratio")
    for i, v in enumerate(values):
        ax_ratio.annotate(f"{v:.2f}", (v, i), va="center", fontsize=8)
