"""Data-parallel scaling: examples/s of the reference PC step on 1, 2, 4, ... devices.

    python benchmarks/scaling.py                           # the devices there are
    python benchmarks/scaling.py --simulate_cpu_devices 4  # 4 CPU devices (checks only)

The reference workload (MLP 784-128-128-128-10 tanh, T=4, node SGD 0.01,
Adam 1e-3) trains ``--steps`` batches of ``--batch_size`` (the global batch:
each device gets ``batch_size / n``) on the first ``n`` devices through
``fpc.DataParallel`` and a plain ``jax.jit(state.train_step)``, for every
``n`` in 1, 2, 4, ... up to the device count. It reports examples/s and the
largest weight difference to the 1-device run (float reordering only).

On simulated CPU devices (``--simulate_cpu_devices``) the "devices" share the
machine's cores: the run checks correctness and measures the overhead of
splitting the batch, not a speed-up, and says so. On a machine with several
GPUs it gives the real table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--simulate_cpu_devices", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.simulate_cpu_devices:
        # Must happen before JAX starts: the device count is fixed then.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.simulate_cpu_devices}"
        )
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    import optax

    import flax_pc as fpc
    from benchmarks import models

    all_devices = jax.devices()
    simulated = all_devices[0].platform == "cpu" and len(all_devices) > 1
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= len(all_devices)]
    rng = np.random.default_rng(0)
    x = rng.random((args.steps, args.batch_size, 784), np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, (args.steps, args.batch_size))]
    model = models.MLP()
    params = jax.jit(model.init)(jax.random.key(1), x[0])["params"]

    def fresh_state():
        return fpc.PCTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-3),
            inference=fpc.Inference(optax.sgd(0.01), 4),
        )  # fmt: skip

    step = jax.jit(lambda s, xb, yb: s.train_step(xb, yb))
    rows, reference = [], None
    for n in counts:
        if args.batch_size % n:
            continue
        parallel = fpc.DataParallel.create(all_devices[:n])
        batches = [parallel.shard((x[i], y[i])) for i in range(args.steps)]
        times = []
        for _ in range(args.repeats):
            state = parallel.replicate(fresh_state())
            state, _ = step(state, *batches[0])  # compile (and one step) outside the timing
            jax.block_until_ready(state)
            start = time.perf_counter()
            for batch in batches[1:]:
                state, _ = step(state, *batch)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - start)
        weights = [np.asarray(w) for w in jax.tree_util.tree_leaves(state.params)]
        if reference is None:
            reference = weights
        difference = max(float(np.abs(a - b).max()) for a, b in zip(weights, reference))
        seconds = statistics.median(times)
        rows.append(
            {
                "devices": n,
                "examples_per_second": (args.steps - 1) * args.batch_size / seconds,
                "max_weight_difference_to_1": difference,
            }
        )
    base = rows[0]["examples_per_second"]
    for row in rows:
        row["speed_up"] = row["examples_per_second"] / base
    report = {
        "platform": all_devices[0].platform,
        "device_kind": all_devices[0].device_kind,
        "simulated_cpu_devices": simulated,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rows": rows,
    }
    print(
        f"== data-parallel scaling, {report['device_kind']} ({report['platform']}), global batch "
        f"{args.batch_size}, {args.steps - 1} timed steps, median of {args.repeats}"
    )
    if simulated:
        print(
            "   simulated CPU devices share this machine's cores: this checks correctness and "
            "the overhead of splitting the batch; it is not a speed-up measurement."
        )
    print("| devices | examples/s | vs 1 device | max |W - W_1 device| |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['devices']} | {row['examples_per_second']:,.0f} | {row['speed_up']:.2f} | "
            f"{row['max_weight_difference_to_1']:.1e} |"
        )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
