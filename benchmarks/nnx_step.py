"""NNX step time: ``fpc.nnx.train_step`` against the linen ``PCTrainState.train_step``.

    python benchmarks/nnx_step.py                      # Fashion-MNIST when present, else synthetic
    python benchmarks/nnx_step.py --rounds 4 --steps 20  # a quick look

The reference workload of benchmarks/README.md: MLP 784-128-128-128-10, tanh,
a value node after each hidden layer, T = 4 SGD (0.01) steps on the nodes, one
Adam (1e-3) step on the weights, batch 256, squared-error output. Three
variants train from the same initial weights on the same batches (gathered on
the device by a row of indices, as in harness.py's ``batch`` style):

- ``linen``: ``jax.jit(lambda s, x, y, idx: s.train_step(x[idx], y[idx]), donate_argnums=0)``;
- ``nnx``: the same step as an NNX model, ``fpc.nnx.train_step`` inside an
  ``nnx.jit`` function (``step(model, optimizer, x, y, idx)``), as NNX's own
  examples train;
- ``nnx_cached``: that function through ``nnx.cached_partial(step, model,
  optimizer)``, which skips NNX's traversal of the model and optimiser on
  every call (Flax's advice for a step called many times);
- ``nnx_functional``: NNX's functional API, ``jax.jit`` (donating) over
  ``nnx.split((model, optimizer))``'s state, merged inside the step: no NNX
  work per call at all, so its time is the compiled step's alone.

Each round runs ``--steps`` steps of every variant back to back (the order
rotated per round); per-step time is the round's time over ``--steps``,
wall-clock and process CPU time. Reported: the medians over the rounds after
the first, the paired ratios (median over rounds of the variant's time over
linen's in the same round), the first call of each (trace + compile + one
step), and ``max |W - W_linen|`` after all rounds (the same maths: 0 or
float32 rounding). Writes ``--out``/``--name``.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import flax_pc as fpc
from benchmarks import data, models

VARIANTS = ("linen", "nnx", "nnx_cached", "nnx_functional")


class NNXMLP(nnx.Module):
    """``models.MLP`` in NNX: ``Linear -> tanh -> PCNode`` per hidden layer, a ``Linear`` output."""

    def __init__(
        self,
        hidden: Sequence[int] = (128, 128, 128),
        inputs: int = 784,
        outputs: int = 10,
        *,
        rngs: nnx.Rngs,
    ):
        sizes = (inputs, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.nodes = nnx.List([fpc.nnx.PCNode() for _ in hidden])
        self.out = nnx.Linear(hidden[-1], outputs, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, node in zip(self.layers, self.nodes):
            x = node(jnp.tanh(layer(x)))
        return self.out(x)


def linen_layout(model: NNXMLP) -> dict[str, Any]:
    """The NNX model's params named as ``models.MLP``'s (``Dense_0`` ... ``Dense_3``)."""
    layers = [*model.layers, model.out]
    return {
        f"Dense_{i}": nnx.to_pure_dict(nnx.state(layer, nnx.Param))
        for i, layer in enumerate(layers)
    }


def nnx_twin(params: dict[str, Any]) -> NNXMLP:
    """An ``NNXMLP`` holding the linen ``models.MLP`` params."""
    model = NNXMLP(rngs=nnx.Rngs(0))
    hidden = len(model.layers)
    nnx.update(
        model,
        {
            "layers": {i: params[f"Dense_{i}"] for i in range(hidden)},
            "out": params[f"Dense_{hidden}"],
        },
    )
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(data.DEFAULT_DATA_DIR))
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--inference_steps", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=11, help="timed rounds (the first is dropped)"
    )
    parser.add_argument("--steps", type=int, default=100, help="train steps per variant per round")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    parser.add_argument("--name", default="nnx_step")
    return parser.parse_args(argv)


def make_variants(args: argparse.Namespace, example: jax.Array) -> tuple[dict, dict, dict]:
    """``(runs, weights, arrays)``: ``runs[name](idx)`` trains one step on the rows ``idx``
    of ``arrays["x"]``, ``arrays["y"]`` (filled in by the caller); ``weights[name]()`` are
    the variant's params in the linen layout."""
    model = models.MLP()
    params = model.init(jax.random.key(0), example)["params"]
    inference, tx = fpc.Inference(optax.sgd(0.01), args.inference_steps), optax.adam(1e-3)
    state = fpc.PCTrainState.create(apply_fn=model.apply, params=params, tx=tx, inference=inference)
    linen_step = jax.jit(lambda s, x, y, idx: s.train_step(x[idx], y[idx]), donate_argnums=0)
    holder: dict[str, Any] = {"state": state}
    # Copies: the linen step donates its state's buffers.
    nnx_models = {name: nnx_twin(jax.tree_util.tree_map(jnp.copy, params)) for name in VARIANTS[1:]}
    optimizers = {name: nnx.Optimizer(m, tx, wrt=nnx.Param) for name, m in nnx_models.items()}

    @nnx.jit
    def nnx_step(model, optimizer, x, y, idx):
        return fpc.nnx.train_step(model, optimizer, x[idx], y[idx], inference=inference)

    cached = nnx.cached_partial(nnx_step, nnx_models["nnx_cached"], optimizers["nnx_cached"])
    arrays: dict[str, jax.Array] = {}

    def run_linen(idx):
        holder["state"], metrics = linen_step(holder["state"], arrays["x"], arrays["y"], idx)
        return metrics

    def run_nnx(idx):
        return nnx_step(nnx_models["nnx"], optimizers["nnx"], arrays["x"], arrays["y"], idx)

    def run_cached(idx):
        return cached(arrays["x"], arrays["y"], idx)

    graphdef, functional_state = nnx.split(
        (nnx_models["nnx_functional"], optimizers["nnx_functional"])
    )
    holder["functional"] = functional_state

    @functools.partial(jax.jit, donate_argnums=0)
    def functional_step(state, x, y, idx):
        model, optimizer = nnx.merge(graphdef, state)
        metrics = fpc.nnx.train_step(model, optimizer, x[idx], y[idx], inference=inference)
        return nnx.state((model, optimizer)), metrics

    def run_functional(idx):
        holder["functional"], metrics = functional_step(
            holder["functional"], arrays["x"], arrays["y"], idx
        )
        return metrics

    runs = {
        "linen": run_linen,
        "nnx": run_nnx,
        "nnx_cached": run_cached,
        "nnx_functional": run_functional,
    }
    weights = {
        "linen": lambda: holder["state"].params,
        "nnx": lambda: linen_layout(nnx_models["nnx"]),
        "nnx_cached": lambda: linen_layout(nnx_models["nnx_cached"]),
        "nnx_functional": lambda: linen_layout(nnx.merge(graphdef, holder["functional"])[0]),
    }
    return runs, weights, arrays


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    dataset = data.mnist_like(args.data_dir, num_train=4 * args.batch_size, num_test=1)
    num_batches = len(dataset.x_train) // args.batch_size
    order = np.random.default_rng(0).permutation(len(dataset.x_train))
    batches = jnp.asarray(order[: num_batches * args.batch_size].reshape(num_batches, -1))
    runs, weights, arrays = make_variants(args, jnp.asarray(dataset.x_train[:1]))
    arrays.update(x=jnp.asarray(dataset.x_train), y=jnp.asarray(dataset.y_train))

    first_call = {}
    for name, run in runs.items():  # trace + compile + one step; every variant sees batch 0
        start = time.perf_counter()
        jax.block_until_ready(run(batches[0]))
        first_call[name] = time.perf_counter() - start

    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    position = 1
    for round_index in range(args.rounds):
        rotation = names[round_index % len(names) :] + names[: round_index % len(names)]
        rows = [batches[(position + s) % num_batches] for s in range(args.steps)]
        position += args.steps
        for name in rotation:
            start, start_cpu = time.perf_counter(), time.process_time()
            for idx in rows:
                metrics = runs[name](idx)
            jax.block_until_ready(metrics)
            wall[name].append((time.perf_counter() - start) / args.steps)
            cpu[name].append((time.process_time() - start_cpu) / args.steps)

    def median_after_first(times):
        return float(np.median(times[1:] if len(times) > 1 else times))

    reference = weights["linen"]()
    result = {
        "workload": f"MLP 784-128-128-128-10, T={args.inference_steps}, batch {args.batch_size}",
        "data": dataset.name,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "variants": {},
    }
    for name in runs:
        difference = jax.tree_util.tree_map(
            lambda a, b: float(jnp.max(jnp.abs(a - b))), weights[name](), reference
        )
        result["variants"][name] = {
            "ms_per_step": 1e3 * median_after_first(wall[name]),
            "cpu_ms_per_step": 1e3 * median_after_first(cpu[name]),
            "first_call_s": first_call[name],
            "ratio_to_linen": median_after_first(np.array(wall[name]) / np.array(wall["linen"])),
            "cpu_ratio_to_linen": median_after_first(np.array(cpu[name]) / np.array(cpu["linen"])),
            "max_weight_difference": max(jax.tree_util.tree_leaves(difference)),
        }
    print(f"{result['workload']} ({result['data']}, {result['device']})")
    header = ("variant", "ms/step", "cpu ms/step", "first call s", "/ linen (wall, cpu)")
    print("| " + " | ".join(header) + " | max abs(W - W_linen) |")
    print("|---|---|---|---|---|---|")
    for name, row in result["variants"].items():
        print(
            f"| {name} | {row['ms_per_step']:.2f} | {row['cpu_ms_per_step']:.2f} | "
            f"{row['first_call_s']:.2f} | {row['ratio_to_linen']:.2f}, "
            f"{row['cpu_ratio_to_linen']:.2f} | {row['max_weight_difference']:.1e} |"
        )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
