"""Compile time of flax_pc's train step against the number of inference steps T.

For each model (``mlp``: the reference MLP 784-128-128-128-10, batch 256;
``cnn``: the MNIST example's CNN on 28x28x1 images, batch 256) and each T of
``--steps``, the train step is lowered and compiled from a fresh ``jax.jit``
three ways: ``unroll=False`` (a rolled ``lax.scan``: the reference, whose
compile time does not grow with T), ``unroll=None`` (flax_pc's default) and
``unroll=True`` (every step unrolled; only up to ``--max_unrolled`` steps, as it
takes minutes beyond). Rounds are interleaved and the median over
``--repeats`` rounds is reported (wall clock, and process CPU time, which
is steadier on a shared machine), with each variant's ratio to the rolled
loop (the rule of ``unroll=None`` keeps it within 3x for every T).
Optionally (``--run_models mlp``) each compiled step is also run, for its
time per batch (median of ``--runs``). Last, ``fpc.infer`` with
``fpc.Inference(node_tx, --infer_steps)`` (the default unroll) is compiled and
run on the MLP: the equilibrium check the field uses (T = 4000).

    python benchmarks/compile_time.py                      # ~5 min on 2 cores
    python benchmarks/compile_time.py --max_unrolled 512   # + the unrolled T=256, 512 (minutes)

Writes ``<out>/<name>.json``; see benchmarks/README.md ("Compile time and T").
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import flax_pc as fpc
from benchmarks import models

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
UNROLLS = {"rolled": False, "default": None, "unrolled": True}


def _workload(name: str) -> tuple[Any, jax.Array, jax.Array]:
    key = jax.random.key(0)
    if name == "mlp":
        model, x = models.MLP(), jax.random.normal(key, (256, 784))
    elif name == "cnn":
        model, x = models.CNN(), jax.random.normal(key, (256, 28, 28, 1))
    else:
        raise ValueError(f"unknown model {name!r}: mlp or cnn")
    return model, x, jax.nn.one_hot(jnp.arange(256) % 10, 10)


def _state(model: Any, x: jax.Array, steps: int, unroll: Any) -> fpc.PCTrainState:
    params = jax.jit(model.init)(jax.random.key(1), x[:1])["params"]
    return fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-3),
        inference=fpc.Inference(optax.sgd(0.01), steps, unroll=unroll),
    )  # fmt: skip


def _compile(state: fpc.PCTrainState, x: jax.Array, y: jax.Array) -> tuple[Any, float, float]:
    """A cold compile (a fresh ``jax.jit``): ``(compiled, wall s, process CPU s)``."""
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    wall, cpu = time.perf_counter(), time.process_time()
    compiled = step.lower(state, x, y).compile()
    return compiled, time.perf_counter() - wall, time.process_time() - cpu


def _run_time(compiled: Any, state: Any, x: jax.Array, y: jax.Array, runs: int) -> float:
    jax.block_until_ready(compiled(state, x, y))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, x, y))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    model_name: str,
    steps: Sequence[int],
    *,
    max_unrolled: int,
    repeats: int,
    runs: int,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Compile times (and run times, if ``runs``) per T and variant, medians over rounds."""
    model, x, y = _workload(model_name)
    rows = []
    for t in steps:
        variants = {
            name: unroll
            for name, unroll in UNROLLS.items()
            if name != "unrolled" or t <= max_unrolled
        }
        states = {name: _state(model, x, t, unroll) for name, unroll in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu_times: dict[str, list[float]] = {name: [] for name in variants}
        compiled = {}
        for _ in range(repeats):
            for name in variants:
                compiled[name], seconds, cpu_seconds = _compile(states[name], x, y)
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
        row: dict[str, Any] = {
            "model": model_name,
            "T": t,
            "default_unroll": fpc.Inference(optax.sgd(0.01), t).scan_unroll,
        }
        for name in variants:
            row[f"{name}_compile_s"] = statistics.median(times[name])
            row[f"{name}_compile_cpu_s"] = statistics.median(cpu_times[name])
            if runs:
                row[f"{name}_ms_per_batch"] = 1e3 * _run_time(
                    compiled[name], states[name], x, y, runs
                )
        for name in ("default", "unrolled"):
            if f"{name}_compile_s" in row:
                row[f"{name}_over_rolled"] = row[f"{name}_compile_s"] / row["rolled_compile_s"]
                row[f"{name}_over_rolled_cpu"] = (
                    row[f"{name}_compile_cpu_s"] / row["rolled_compile_cpu_s"]
                )
        log(_format_row(row))
        rows.append(row)
    return rows


def _format_row(row: dict[str, Any]) -> str:
    parts = [f"{row['model']:>4} T={row['T']:<5} default unroll={row['default_unroll']!s:<5}"]
    for name in UNROLLS:
        if f"{name}_compile_s" in row:
            text = (
                f"{name} {row[f'{name}_compile_s']:6.2f} s (cpu {row[f'{name}_compile_cpu_s']:.2f})"
            )
            if f"{name}_ms_per_batch" in row:
                text += f" ({row[f'{name}_ms_per_batch']:.1f} ms/batch)"
            parts.append(text)
    for name in ("default", "unrolled"):
        if f"{name}_over_rolled" in row:
            parts.append(
                f"{name}/rolled {row[f'{name}_over_rolled']:.2f} "
                f"(cpu {row[f'{name}_over_rolled_cpu']:.2f})"
            )
    return "  ".join(parts)


def infer_long(steps: int) -> dict[str, float]:
    """``fpc.infer`` with ``steps`` inference steps and the default unroll, on the MLP."""
    model, x, y = _workload("mlp")
    params = jax.jit(model.init)(jax.random.key(1), x[:1])["params"]
    nodes = jax.jit(fpc.init_nodes, static_argnums=0)(model.apply, params, x)

    def run(params, nodes):
        return fpc.infer(
            model.apply, params, nodes, x, y, inference=fpc.Inference(optax.sgd(0.01), steps)
        )

    start, cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(run).lower(params, nodes).compile()
    compile_s, compile_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    _, energies = jax.block_until_ready(compiled(params, nodes))
    run_s = time.perf_counter() - start
    return {
        "T": steps,
        "compile_s": compile_s,
        "compile_cpu_s": compile_cpu_s,
        "run_s": run_s,
        "energy_first": float(energies.total[0]) / 256,
        "energy_last": float(energies.total[-1]) / 256,
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).parent,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--models", default="mlp,cnn", help="mlp, cnn or both")
    p.add_argument("--steps", default="8,32,64,128,256,512", help="the values of T")
    p.add_argument("--max_unrolled", type=int, default=128, help="largest T compiled unrolled")
    p.add_argument("--repeats", type=int, default=3, help="interleaved compile rounds")
    p.add_argument("--run_models", default="", help="models whose steps are also run, e.g. mlp")
    p.add_argument("--runs", type=int, default=5, help="runs per compiled step (--run_models)")
    p.add_argument("--infer_steps", type=int, default=4000, help="T of the fpc.infer run (0: none)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--name", default="compile_time")
    args = p.parse_args(argv)
    steps = [int(v) for v in args.steps.split(",")]
    run_models = set(filter(None, args.run_models.split(",")))
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "jax": jax.__version__, "devices": str(jax.devices())},
        "commit": _commit(),
        "args": vars(args),
        "rows": [],
    }  # fmt: skip
    for model_name in filter(None, args.models.split(",")):
        report["rows"] += measure(
            model_name, steps, max_unrolled=args.max_unrolled, repeats=args.repeats,
            runs=args.runs if model_name in run_models else 0,
        )  # fmt: skip
    if args.infer_steps:
        report["infer"] = infer_long(args.infer_steps)
        i = report["infer"]
        print(
            f"fpc.infer, MLP, T={i['T']}: compile {i['compile_s']:.2f} s, run {i['run_s']:.2f} s, "
            f"energy per example {i['energy_first']:.4f} -> {i['energy_last']:.4f}"
        )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
