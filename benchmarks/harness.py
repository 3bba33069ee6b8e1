"""Training variants and how they are measured.

A :class:`Variant` is one implementation (flax_pc, plain-JAX PC, backprop) in
one style (``'batch'``: one jitted train step per batch, driven from Python;
``'epoch'``: the whole epoch under one jit, a ``lax.scan`` over batches). All
variants of a :class:`Workload` start from the same weights and see the same
batches in the same order: the batch order of an epoch comes from one key
through :func:`plain_pc.epoch_batches`, which is ``flax_pc.train_epoch``'s.
The data lives on the device; batches are gathered there by index.

flax_pc and plain-JAX PC come with their inference loop fully unrolled
(flax_pc's default) and, named ``<impl>_rolled``, as a rolled loop
(:func:`make_variants`' ``unrolls``). A workload without a plain-JAX twin (the
ResNet) takes its backprop from ``PCTrainState(algorithm='bp')``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import flax_pc as fpc
from benchmarks import plain_pc

Array = jax.Array
IMPLS = ("flax_pc", "plain_jax", "backprop")
#: Suffix of an implementation whose inference loop is a rolled ``lax.scan``
#: (``unroll=False``; ``fori_loop`` in plain JAX) instead of fully unrolled.
ROLLED = "_rolled"
STYLES = ("batch", "epoch")


@dataclasses.dataclass(frozen=True)
class Workload:
    """A network and its PC hyperparameters; the weights come from ``model.init``.

    ``layers`` and ``names`` describe the plain-JAX twin (:mod:`plain_pc`);
    ``None`` for a model without one (the ResNet), whose backprop variant is
    then ``PCTrainState(algorithm='bp')`` on the same model. ``train_arg``: the
    model's ``__call__`` takes ``train`` (BatchNorm): training-mode apply in
    the train step, ``train=False`` to evaluate, ``batch_stats`` carried in
    ``state.model_state``. ``with_nodes``: the model has no ``PCNode`` of its own;
    PC trains ``fpc.with_nodes(model.apply, latent=latent)`` (the Transformer
    language model).
    """

    name: str
    model: nn.Module
    layers: Sequence[plain_pc.Layer] | None
    names: Sequence[str] | None
    inference_steps: int
    batch_size: int
    node_lr: float = 0.01
    weight_lr: float = 1e-3
    seed: int = 0
    train_arg: bool = False
    output_energy: Callable[[Array, Array], Array] = fpc.energies.squared_error
    with_nodes: bool = False
    latent: Literal["value", "error"] = "value"

    def weight_tx(self) -> optax.GradientTransformation:
        """The weight optimiser (Adam)."""
        return optax.adam(self.weight_lr)

    def twin(self) -> tuple[Sequence[plain_pc.Layer], Sequence[str]]:
        """``(layers, names)`` of the plain-JAX twin; a ValueError for a workload without one."""
        if self.layers is None or self.names is None:
            raise ValueError(f"workload {self.name!r} has no plain-JAX twin")
        return self.layers, self.names

    def init(self, example: Array) -> tuple[Any, dict[str, Any]]:
        """``(params, model_state)`` every variant starts from."""
        # One compile, and with 'rbg' keys: XLA:CPU takes seconds to compile threefry
        # for a VGG-5's worth of initialisers.
        key = jax.random.key(self.seed, impl="rbg")
        init = (
            functools.partial(self.model.init, train=False) if self.train_arg else self.model.init
        )
        variables = dict(jax.jit(init)(key, example[:1]))
        params = variables.pop("params")
        # flax_pc's own collections (the nodes) are made per batch, not state to carry.
        model_state = {k: v for k, v in variables.items() if k not in (fpc.NODES, fpc.ENERGIES)}
        return params, model_state

    def init_params(self, example: Array) -> Any:
        """The flax params every variant starts from."""
        return self.init(example)[0]

    @functools.cached_property
    def apply_fn(self) -> Callable[..., Any]:
        """The training-mode ``apply`` (what ``PCTrainState`` gets); one per workload, so
        that every state of it has the same (static) ``apply_fn``."""
        if self.train_arg:
            return functools.partial(self.model.apply, train=True)
        if self.with_nodes:
            return fpc.with_nodes(self.model.apply, latent=self.latent)
        return self.model.apply

    def predict(self, params: Any, model_state: Any, x: Array) -> Array:
        """The feed-forward network in evaluation mode."""
        kwargs: dict[str, Any] = {"train": False} if self.train_arg else {}
        return cast(Array, self.model.apply({"params": params, **model_state}, x, **kwargs))


@dataclasses.dataclass(frozen=True)
class Driver:
    """How the harness compiles and runs the epochs of one implementation in one style.

    Attributes:
      make_jit: returns a *fresh* ``jax.jit`` function (so each compile is cold).
      lower_args: ``(state, inputs, targets, key) -> args`` for ``lower``.
      run_epoch: ``(compiled, state, inputs, targets, key) -> state``.
    """

    make_jit: Callable[[], Any]
    lower_args: Callable[..., tuple]
    run_epoch: Callable[..., Any]


@dataclasses.dataclass
class Variant:
    """One implementation in one style, with what the harness needs to drive it.

    Attributes:
      impl, style: see the module doc.
      driver: compiles and runs its epochs.
      init_state: a fresh training state from the shared initial weights.
      predict: ``(state, x) -> outputs``, the feed-forward network.
      plain_weights: ``state -> plain_pc weights`` (to compare implementations).
    """

    impl: str
    style: str
    driver: Driver
    init_state: Callable[[], Any]
    predict: Callable[[Any, Array], Array]
    plain_weights: Callable[[Any], plain_pc.Weights]

    @property
    def name(self) -> str:
        """``'impl/style'``."""
        return f"{self.impl}/{self.style}"


def _copy(tree):
    # Every variant donates its state: give each its own buffers.
    return jax.tree_util.tree_map(jnp.array, tree)


def _batch_rows(inputs, key, batch_size):
    # Device-side slices of the device-side order: no host round trip.
    return list(plain_pc.epoch_batches(key, inputs.shape[0], batch_size))


def _index_args(state, inputs, targets, key, batch_size):
    return (state, inputs, targets, jnp.zeros((batch_size,), jnp.int32))


def _flax_pc_driver(style: str, bs: int) -> Driver:
    """``PCTrainState.train_step`` per batch (``'batch'``) or ``fpc.train_epoch``."""
    if style == "batch":

        def make_jit():
            return jax.jit(lambda s, x, y, idx: s.train_step(x[idx], y[idx]), donate_argnums=0)

        def run_epoch(compiled, state, inputs, targets, key) -> Any:
            for rows in _batch_rows(inputs, key, bs):
                state, _ = compiled(state, inputs, targets, rows)
            return state

        def lower_args(state, inputs, targets, key) -> tuple[Any, ...]:
            return _index_args(state, inputs, targets, key, bs)
    else:

        def make_jit():
            return jax.jit(
                lambda s, x, y, key: fpc.train_epoch(s, x, y, key, batch_size=bs),
                donate_argnums=0,
            )

        def run_epoch(compiled, state, inputs, targets, key) -> Any:
            return compiled(state, inputs, targets, key)[0]

        def lower_args(state, inputs, targets, key) -> tuple[Any, ...]:
            return (state, inputs, targets, key)

    return Driver(make_jit, lower_args, run_epoch)


def _plain_driver(style: str, bs: int, make_step: Callable[[], plain_pc.Step]) -> Driver:
    """A plain-JAX ``step(w, s, x, y)`` per batch (``'batch'``) or ``plain_pc.make_epoch``."""
    if style == "batch":

        def make_jit():
            step = make_step()
            return jax.jit(
                lambda w, s, x, y, idx: step(w, s, x[idx], y[idx]), donate_argnums=(0, 1)
            )

        def run_epoch(compiled, state, inputs, targets, key) -> Any:
            w, s = state
            for rows in _batch_rows(inputs, key, bs):
                w, s, _ = compiled(w, s, inputs, targets, rows)
            return w, s

        def lower_args(state, inputs, targets, key) -> tuple[Any, ...]:
            return (*state, inputs, targets, jnp.zeros((bs,), jnp.int32))
    else:

        def make_jit():
            return jax.jit(plain_pc.make_epoch(make_step(), bs), donate_argnums=(0, 1))

        def run_epoch(compiled, state, inputs, targets, key) -> Any:
            return compiled(*state, inputs, targets, key)[:2]

        def lower_args(state, inputs, targets, key) -> tuple[Any, ...]:
            return (*state, inputs, targets, key)

    return Driver(make_jit, lower_args, run_epoch)


def flax_pc_variant(
    workload: Workload,
    params: Any,
    style: str,
    *,
    model_state: Any = None,
    unroll: bool = True,
    algorithm: Literal["pc", "bp"] = "pc",
) -> Variant:
    """flax_pc's ``PCTrainState.train_step`` (``'batch'``) or ``fpc.train_epoch``.

    ``unroll`` is the inference loop's (``fpc.Inference(..., unroll=...)``);
    ``algorithm='bp'`` is backprop on the same model (the ``backprop`` variant
    of a workload without a plain-JAX twin).
    """
    model_state = model_state or {}
    if algorithm == "bp":
        impl = "backprop"
    else:
        impl = "flax_pc" if unroll else "flax_pc" + ROLLED

    inference = fpc.Inference(optax.sgd(workload.node_lr), workload.inference_steps, unroll=unroll)

    def init_state():
        return fpc.PCTrainState.create(
            apply_fn=workload.apply_fn,
            params=_copy(params),
            tx=workload.weight_tx(),
            inference=inference,
            output_energy=workload.output_energy,
            algorithm=algorithm,  # 'bp' ignores the inference
            model_state=_copy(model_state),
        )

    def plain_weights(state):
        if workload.names is None:
            return state.params
        return plain_pc.weights_from_flax(state.params, workload.names)

    return Variant(
        impl=impl,
        style=style,
        driver=_flax_pc_driver(style, workload.batch_size),
        init_state=init_state,
        predict=lambda state, x: workload.predict(state.params, state.model_state, x),
        plain_weights=plain_weights,
    )


def plain_variant(workload: Workload, params: Any, style: str, impl: str, **step_kw) -> Variant:
    """Plain-JAX PC (``impl='plain_jax'``) or backprop (``impl='backprop'``)."""
    layers, names = workload.twin()
    weights = plain_pc.weights_from_flax(params, names)

    def make_step():
        if impl == "backprop":
            return plain_pc.make_bp_step(layers, workload.weight_tx())
        return plain_pc.make_pc_step(
            layers,
            workload.weight_tx(),
            workload.node_lr,
            workload.inference_steps,
            **step_kw,
        )

    def init_state():
        w = _copy(weights)
        return w, workload.weight_tx().init(w)

    if impl == "plain_jax" and not step_kw.get("unroll", False):
        impl += ROLLED
    return Variant(
        impl=impl,
        style=style,
        driver=_plain_driver(style, workload.batch_size, make_step),
        init_state=init_state,
        predict=lambda state, x: plain_pc.predict(layers, state[0], x),
        plain_weights=lambda state: state[0],
    )


def make_variants(
    workload: Workload,
    params: Any,
    impls: Sequence[str] = IMPLS,
    styles: Sequence[str] = STYLES,
    unrolls: Sequence[bool] = (True,),
    energy_trajectory: bool = False,
    model_state: Any = None,
) -> list[Variant]:
    """Every requested implementation in every requested style.

    ``unrolls``: the inference loops of flax_pc and plain-JAX PC, one variant
    each: ``True`` fully unrolled (flax_pc's default; plain JAX a Python loop),
    ``False`` rolled (``lax.scan(unroll=False)``; plain JAX ``fori_loop``),
    named ``<impl>_rolled``. ``energy_trajectory`` goes to
    :func:`plain_pc.make_pc_step`. A workload without a plain-JAX twin
    (``layers=None``) gets its ``backprop`` from ``PCTrainState(algorithm='bp')``.
    """
    variants = []
    for style in styles:
        for impl in impls:
            if impl == "flax_pc":
                for unroll in unrolls:
                    variants.append(
                        flax_pc_variant(
                            workload, params, style, model_state=model_state, unroll=unroll
                        )
                    )
            elif impl == "plain_jax":
                if workload.layers is None:
                    raise ValueError(f"workload {workload.name!r} has no plain-JAX twin")
                for unroll in unrolls:
                    variants.append(
                        plain_variant(
                            workload,
                            params,
                            style,
                            impl,
                            unroll=unroll,
                            energy_trajectory=energy_trajectory,
                        )  # fmt: skip
                    )
            elif impl == "backprop":
                if workload.layers is None:
                    variants.append(
                        flax_pc_variant(
                            workload, params, style, model_state=model_state, algorithm="bp"
                        )
                    )
                else:
                    variants.append(plain_variant(workload, params, style, impl))
            else:
                raise ValueError(f"unknown implementation {impl!r}; pick from {IMPLS}")
    return variants


def _memory(compiled) -> dict[str, float]:
    """XLA's buffer assignment for the compiled function, in MiB."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return {}
    if stats is None:
        return {}
    mib = 1 / 2**20
    peak = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
    )
    return {
        "xla_temp_bytes": int(stats.temp_size_in_bytes),
        "xla_temp_mib": stats.temp_size_in_bytes * mib,
        "xla_argument_mib": stats.argument_size_in_bytes * mib,
        "xla_peak_mib": peak * mib,
    }


def accuracy(
    predict: Callable[[Any, Array], Any],
    state: Any,
    x: Array | np.ndarray,
    y: Array | np.ndarray,
    chunk: int = 1000,
) -> float:
    """Feed-forward accuracy of ``predict(state, x)``: argmax against argmax of ``y``, over
    every prediction (``y``: ``[N, ..., classes]``; a language model's: one per position)."""
    predict = jax.jit(predict)
    hits = 0
    for start in range(0, x.shape[0], chunk):
        out = predict(state, x[start : start + chunk])
        hits += int(jnp.sum(out.argmax(-1) == y[start : start + chunk].argmax(-1)))
    return hits / math.prod(y.shape[:-1])


def run(
    variants: Sequence[Variant],
    data: tuple[Array, Array, Array, Array],
    *,
    batch_size: int,
    epochs: int,
    compile_repeats: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Compiles and trains every variant in this process, interleaved.

    Compiles are interleaved over ``compile_repeats`` rounds; epochs are
    interleaved too (variant order rotated every epoch) so that load from
    other processes hits all variants alike. Epoch ``e`` uses the key
    ``fold_in(key(seed), e)`` for every variant.

    Returns:
      ``{variant name: metrics}``: compile times (median over the rounds),
      every epoch's wall-clock and process CPU seconds with their medians over
      the epochs after the first, examples/second (wall clock), XLA memory,
      test accuracy and the final weights (``'_weights'``).
    """
    x_train, y_train, x_test, y_test = data
    num_examples = (x_train.shape[0] // batch_size) * batch_size
    results: dict[str, dict[str, Any]] = {v.name: {"compile": []} for v in variants}
    states = {v.name: v.init_state() for v in variants}
    key = jax.random.key(seed)
    compiled = {}
    for r in range(compile_repeats):
        for v in variants:
            fn = v.driver.make_jit()
            args = v.driver.lower_args(states[v.name], x_train, y_train, key)
            t0 = time.perf_counter()
            lowered = fn.lower(*args)
            t1 = time.perf_counter()
            compiled[v.name] = lowered.compile()
            t2 = time.perf_counter()
            results[v.name]["compile"].append((t1 - t0, t2 - t1))
            log(f"  compile {v.name:20s} round {r}: lower {t1 - t0:.2f}s compile {t2 - t1:.2f}s")

    epoch_times: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu_times: dict[str, list[float]] = {v.name: [] for v in variants}
    for e in range(epochs):
        epoch_key = jax.random.fold_in(key, e)
        shift = e % len(variants)
        for v in list(variants[shift:]) + list(variants[:shift]):
            t0, c0 = time.perf_counter(), time.process_time()
            state = v.driver.run_epoch(
                compiled[v.name], states[v.name], x_train, y_train, epoch_key
            )
            jax.block_until_ready(state)
            epoch_times[v.name].append(time.perf_counter() - t0)
            cpu_times[v.name].append(time.process_time() - c0)
            states[v.name] = state
            log(
                f"  epoch {e} {v.name:20s} {epoch_times[v.name][-1]:.3f}s "
                f"(cpu {cpu_times[v.name][-1]:.3f}s)"
            )

    for v in variants:
        res = results[v.name]
        rounds = res.pop("compile")
        lowers, compiles = zip(*rounds)
        median = _median_after_first(epoch_times[v.name])
        res.update(
            impl=v.impl,
            style=v.style,
            lower_s=statistics.median(lowers),
            xla_compile_s=statistics.median(compiles),
            compile_s=statistics.median([a + b for a, b in zip(lowers, compiles)]),
            compile_rounds_s=[a + b for a, b in rounds],
            epoch_s=epoch_times[v.name],
            median_epoch_s=median,
            epoch_cpu_s=cpu_times[v.name],
            median_epoch_cpu_s=_median_after_first(cpu_times[v.name]),
            examples_per_s=num_examples / median,
            test_accuracy=accuracy(v.predict, states[v.name], x_test, y_test),
            **_memory(compiled[v.name]),
        )
        res["_weights"] = v.plain_weights(states[v.name])
    return results


def _median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:] or times)


def max_weight_difference(a: plain_pc.Weights, b: plain_pc.Weights) -> float:
    """``max |a - b|`` over every weight."""
    diffs = jax.tree_util.tree_map(lambda p, q: jnp.max(jnp.abs(p - q)), a, b)
    return float(max(np.asarray(d) for d in jax.tree_util.tree_leaves(diffs)))
