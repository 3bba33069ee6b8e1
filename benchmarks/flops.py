"""FLOPs per example of one train step, from XLA's ``cost_analysis``.

XLA's cost analysis counts the body of a while loop (``lax.scan``,
``fori_loop``) once, whatever its trip count. So the steps are traced with
every ``lax.scan`` (and ``fori_loop``, which is built on it) fully unrolled:
:func:`unrolled_loops` patches ``jax.lax.scan`` while tracing, which reaches
flax_pc's own ``lax.scan`` without touching flax_pc. A compiled step that
still holds a ``while`` loop is reported as NaN rather than undercounted.

Unrolled, XLA's CSE computes the first layer's prediction ``mu_1 = f(x; W_1)``
once per batch; in the looped steps that are timed, XLA's loop-invariant code
motion hoists it out of the loop too, so these counts match what runs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import jax
import optax
from jax._src.lax.control_flow import loops as _loops

import flax_pc as fpc
from benchmarks import harness, plain_pc


@contextlib.contextmanager
def unrolled_loops():
    """Within the block, ``jax.lax.scan`` (and so ``fori_loop``) unrolls fully."""
    original = _loops.scan

    @functools.wraps(original)
    def scan(*args, **kwargs):
        kwargs["unroll"] = True
        return original(*args, **kwargs)

    _loops.scan = jax.lax.scan = scan
    try:
        yield
    finally:
        _loops.scan = jax.lax.scan = original


def flops(fn, *args) -> float:
    """XLA's FLOP count of ``jit(fn)(*args)`` after optimisation, loops unrolled."""
    with unrolled_loops():
        compiled = jax.jit(fn).lower(*args).compile()
    if " while(" in (compiled.as_text() or ""):
        return math.nan
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per computation
        cost = cost[0]
    assert cost is not None, "XLA gave no cost analysis"
    return float(cost["flops"])


def train_step_flops(
    workload: harness.Workload,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    model_state: Any = None,
) -> dict[str, float]:
    """FLOPs per example: feed-forward, PC step (plain JAX, flax_pc), backprop step.

    A workload without a plain-JAX twin (``layers=None``) gets flax_pc's PC step,
    ``PCTrainState(algorithm='bp')`` as backprop and the evaluation-mode forward.
    """
    model_state = model_state or {}

    def create(algorithm):
        return fpc.PCTrainState.create(
            apply_fn=workload.apply_fn,
            params=params,
            tx=workload.weight_tx(),
            inference=fpc.Inference(optax.sgd(workload.node_lr), workload.inference_steps),
            output_energy=workload.output_energy,
            algorithm=algorithm,  # 'bp' ignores the inference
            model_state=model_state,
        )

    def train_step(s, x, y):
        return s.train_step(x, y)

    if workload.layers is None:
        total = {
            "forward": flops(lambda p, x: workload.predict(p, model_state, x), params, x),
            "flax_pc": flops(train_step, create("pc"), x, y),
            "backprop": flops(train_step, create("bp"), x, y),
        }
        per_example = {k: v / x.shape[0] for k, v in total.items()}
        per_example["pc_over_backprop"] = total["flax_pc"] / total["backprop"]
        return per_example

    layers, names = workload.twin()
    weights = plain_pc.weights_from_flax(params, names)
    opt_state = workload.weight_tx().init(weights)
    pc_step = plain_pc.make_pc_step(
        layers, workload.weight_tx(), workload.node_lr, workload.inference_steps
    )
    bp_step = plain_pc.make_bp_step(layers, workload.weight_tx())
    total = {
        "forward": flops(lambda w, x: plain_pc.predict(layers, w, x), weights, x),
        "plain_jax_pc": flops(pc_step, weights, opt_state, x, y),
        "flax_pc": flops(train_step, create("pc"), x, y),
        "backprop": flops(bp_step, weights, opt_state, x, y),
    }
    per_example = {k: v / x.shape[0] for k, v in total.items()}
    per_example["pc_over_backprop"] = total["plain_jax_pc"] / total["backprop"]
    per_example["flax_pc_over_plain_jax"] = total["flax_pc"] / total["plain_jax_pc"]
    return per_example
