"""The depth table: deep residual MLPs trained by PC, ePC, μPC, μPC+ePC and backprop.

    python benchmarks/deep_pc.py --data_dir ../shared/datasets/fashion_mnist
    python benchmarks/deep_pc.py --depths 8 16 --epochs 0.1   # a quick look

Each run trains examples/mnist's ``ResidualMLP`` (width 128, ReLU, no bias, a
``PCNode`` after every layer but the output) on Fashion-MNIST for a fixed
budget (``--epochs`` passes, batch 64, Adam, squared-error output energy,
T = ``--inference_steps`` SGD steps on the nodes) and reports:

- the test accuracy after the budget;
- for the PC variants, on 256 test examples with the trained weights: the
  inference steps to converge (the variant's node SGD until ``rms(dF/dv)``
  has fallen ``1/--relative_tolerance``-fold, at most ``--max_steps``) and the
  energy ratio first/last layer after the T training-time steps
  (:func:`flax_pc.energy_ratio`);
- seconds per epoch (compile excluded; a shared 2-core CPU: compare within a row).

The variants: ``pc`` (standard parameterisation, value nodes), ``epc``
(standard, error nodes), ``mupc`` (μPC, value nodes), ``mupc_epc`` (μPC,
error nodes) and ``bp`` (backprop on the μPC network; ``bp_standard``: on the
standard one). Learning rates per variant are in ``VARIANTS``: value nodes
take SGD 0.1, error nodes 0.0003 (configs/mupc.py's: an error step moves
every layer above it), Adam 3e-3 for μPC (configs/mupc.py's) and 1e-3 for the
standard parameterisation (the usual MLP setting).

Writes ``--out``/deep_pc.json and deep_pc.png (accuracy against depth).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time
from typing import Any, Literal

import jax
import jax.flatten_util
import numpy as np
import optax

import flax_pc as fpc
from benchmarks import data, harness
from examples.mnist.models_deep import ResidualMLP

#: variant -> (parameterization, node latent, algorithm, node lr, weight lr)
VARIANTS: dict[
    str, tuple[str, Literal["value", "error"], Literal["pc", "ipc", "bp"], float, float]
] = {
    "pc": ("standard", "value", "pc", 0.1, 1e-3),
    "epc": ("standard", "error", "pc", 0.0003, 1e-3),
    "mupc": ("mupc", "value", "pc", 0.1, 3e-3),
    "mupc_epc": ("mupc", "error", "pc", 0.0003, 3e-3),
    "bp": ("mupc", "value", "bp", 0.1, 3e-3),
    "bp_standard": ("standard", "value", "bp", 0.1, 1e-3),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/datasets/fashion_mnist")
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--inference_steps", type=int, default=8)
    parser.add_argument("--relative_tolerance", type=float, default=0.1)
    parser.add_argument("--max_steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    return parser.parse_args(argv)


def run(variant: str, depth: int, dataset: data.Dataset, args: argparse.Namespace) -> dict:
    """Trains one (variant, depth) and measures it; returns the row."""
    parameterization, latent, algorithm, node_lr, lr = VARIANTS[variant]
    node = functools.partial(fpc.PCNode, latent=latent)
    model = ResidualMLP(depth=depth, width=args.width, mupc=parameterization == "mupc", node=node)
    apply = functools.partial(model.apply, train=True)
    params = model.init(jax.random.key(args.seed), dataset.x_train[:1], train=False)["params"]
    state = fpc.PCTrainState.create(
        apply_fn=apply, params=params, tx=optax.adam(lr),
        inference=fpc.Inference(optax.sgd(node_lr), args.inference_steps, unroll=1),
        algorithm=algorithm,  # 'bp' ignores the inference
    )  # fmt: skip
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    batches = int(args.epochs * (len(dataset.x_train) // args.batch_size))
    order = np.random.default_rng(args.seed).permutation(len(dataset.x_train))
    order = np.concatenate([order] * (1 + batches * args.batch_size // len(order)))
    losses, start = [], None
    for b in range(batches):
        index = order[b * args.batch_size : (b + 1) * args.batch_size]
        state, metrics = step(state, dataset.x_train[index], dataset.y_train[index])
        if b == 0:
            jax.block_until_ready(metrics)
            start = time.perf_counter()
        losses.append(metrics["loss"])
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - start if start is not None else 0.0
    row: dict[str, Any] = {
        "variant": variant,
        "depth": depth,
        "test_accuracy": harness.accuracy(
            lambda params, x: apply({"params": params}, x),
            state.params,
            dataset.x_test,
            dataset.y_test,
        ),  # fmt: skip
        "final_loss": float(np.mean(np.asarray(losses[-50:]))),
        "s_per_epoch": seconds / max(batches - 1, 1) * (len(dataset.x_train) // args.batch_size),
    }
    if algorithm != "bp":
        row.update(inference_diagnostics(apply, state.params, dataset, latent, node_lr, args))
    return row


def _rms(tree: Any) -> float:
    """The root mean square over every entry of ``tree`` (what a tolerance bounds)."""
    flat, _ = jax.flatten_util.ravel_pytree(tree)
    return float(np.sqrt(np.mean(np.square(np.asarray(flat)))))


def inference_diagnostics(apply, params, dataset, latent, node_lr, args) -> dict:
    """Steps to converge and the energy ratio after T steps, on 256 test examples.

    The steps are those of the variant's own node SGD (its training-time
    learning rate) until ``rms(dF/dv)`` is ``--relative_tolerance`` times its
    value at the forward initialisation (relative, as μPC's output scale 1/N
    makes the gradient small from the start; 0.1, as on ReLU networks the
    gradient stalls at the kinks, 1e-3 was out of reach for every variant).
    An adaptive ODE solver (``fpc.GradientFlow``) was tried for a rate-free
    measure: at the kinks the vector field jumps and the solver stalls too.
    """
    x, y = dataset.x_test[:256], dataset.y_test[:256]
    start = fpc.init_nodes(apply, params, x)
    gradient = jax.grad(lambda n: fpc.energy(apply, params, n, x, y).total)(start)
    tolerance = args.relative_tolerance * _rms(gradient)
    result = jax.jit(
        lambda n: fpc.infer_to_equilibrium(
            apply, params, n, x, y,
            inference=fpc.Inference(optax.sgd(node_lr), args.max_steps, tolerance=tolerance),
        )
    )(start)  # fmt: skip
    nodes, _ = jax.jit(
        lambda n: fpc.infer(
            apply, params, n, x, y,
            inference=fpc.Inference(optax.sgd(node_lr), args.inference_steps, unroll=1),
        )
    )(start)  # fmt: skip
    ratio = fpc.diagnostics.energy_ratio(fpc.energy(apply, params, nodes, x, y).nodes)
    return {
        "steps_to_converge": int(result.steps),
        "converged": bool(result.converged),
        "energy_ratio_first_last": float(ratio),
    }


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table of benchmarks/README.md: one line per depth."""
    depths = sorted({row["depth"] for row in rows})
    variants = [v for v in VARIANTS if any(row["variant"] == v for row in rows)]
    lines = [
        "| depth | " + " | ".join(variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for depth in depths:
        cells = []
        for variant in variants:
            row = next((r for r in rows if r["depth"] == depth and r["variant"] == variant), None)
            if row is None:
                cells.append("")
                continue
            cell = f"{100 * row['test_accuracy']:.1f}% · {row['s_per_epoch']:.0f} s"
            if "steps_to_converge" in row:
                steps = row["steps_to_converge"]
                cell += f" · {steps}" if row["converged"] else f" · >{steps}"
                cell += f" · {row['energy_ratio_first_last']:.0e}"
            cells.append(cell)
        lines.append(f"| {depth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for variant in VARIANTS:
        points = sorted((r["depth"], r["test_accuracy"]) for r in rows if r["variant"] == variant)
        if points:
            depths, accuracies = zip(*points)
            axes.plot(depths, [100 * a for a in accuracies], marker="o", label=variant)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("depth (weight layers)")
    axes.set_ylabel("Fashion-MNIST test accuracy (%)")
    axes.set_title("Residual MLP, width 128, fixed budget")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    # Synthetic 784-d data when the IDX files are not there (checks only).
    dataset = data.mnist_like(args.data_dir, num_train=2048, num_test=512)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in args.depths:
        for variant in args.variants:
            row = run(variant, depth, dataset, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "deep_pc.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "deep_pc.png")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
