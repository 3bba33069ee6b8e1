"""flax_pc against plain JAX and backprop, in one process, on the same data and weights.

Workloads (``--workload``):

* ``reference``: Fashion-MNIST, MLP 784-128-128-128-10 tanh, T=4, batch 256;
* ``steps`` / ``width`` / ``depth``: the reference MLP with T, the hidden
  width or the number of hidden layers swept (``--values`` overrides);
* ``conv``: pcx's VGG-5 on synthetic 32x32x3 images, batch 128, T=7 (channels
  ``--conv_channels``, by default a quarter of pcx's so that it runs on a CPU);
* ``cnn``: Fashion-MNIST, the MNIST example's CNN with ``nn.Conv`` (conv 16,
  conv 32, Dense 128; relu, 2x2 average pooling), T=4, batch 256, with the
  inference loop unrolled and rolled (``--unroll both``);
* ``resnet``: Fashion-MNIST, the MNIST example's small ResNet with BatchNorm
  (``configs/resnet.py``), PC against backprop (``PCTrainState(algorithm='bp')``);
* ``lm``: ``configs/lm.py``'s character Transformer (examples/lm: 2 blocks of
  width 64, 8 heads, MLP 256, context 128) on Tiny Shakespeare (synthetic text
  when its file is not there), with the config's PC settings (T, node step,
  latent, output precision, batch), nodes by ``fpc.with_nodes``: PC against
  ``PCTrainState(algorithm='bp')``;
* ``all``: every one of them.

Each prints a table and writes ``<out>/<workload>.json``; sweeps also plot
``<out>/<workload>.png``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn

import flax_pc as fpc
from benchmarks import data as data_lib
from benchmarks import harness, models, plain_pc, plots

SWEEPS = {
    "steps": (1, 4, 16, 64),
    "width": (128, 512, 2048),
    "depth": (3, 6, 12),
}
WORKLOADS = ("reference", *SWEEPS, "conv", "cnn", "resnet", "lm")
IMAGE_WORKLOADS = ("cnn", "resnet")  # Fashion-MNIST as [N, 28, 28, 1] images
ALL_IMPLS = ",".join(harness.IMPLS)
#: Per-workload defaults of the flags left unset: sized for a 2-core CPU.
DEFAULTS = {
    "reference": {"epochs": 7, "batches": None, "test_examples": None, "styles": "batch,epoch",
                  "impls": ALL_IMPLS, "unroll": "true"},
    **{
        name: {"epochs": 4, "batches": 10, "test_examples": 1000, "styles": "epoch",
               "impls": ALL_IMPLS, "unroll": "true"}
        for name in SWEEPS
    },
    "conv": {"epochs": 3, "batches": 2, "test_examples": 256, "styles": "batch,epoch",
             "impls": ALL_IMPLS, "unroll": "true"},
    "cnn": {"epochs": 3, "batches": 20, "test_examples": 2000, "styles": "batch,epoch",
            "impls": "flax_pc,backprop", "unroll": "both"},
    "resnet": {"epochs": 3, "batches": 20, "test_examples": 2000, "styles": "batch",
               "impls": "flax_pc,backprop", "unroll": "true"},
    "lm": {"epochs": 3, "batches": 20, "test_examples": 64, "styles": "epoch",
           "impls": "flax_pc,backprop", "unroll": "true"},
}  # fmt: skip
UNROLLS = {"true": (True,), "false": (False,), "both": (True, False)}
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def _twin_workload(
    name: str,
    model: nn.Module,
    layers: Sequence[plain_pc.Layer],
    *,
    inference_steps: int,
    batch_size: int,
) -> harness.Workload:
    """A workload of ``model`` and its plain-JAX twin ``layers`` (default PC settings)."""
    return harness.Workload(
        name=name,
        model=model,
        layers=layers,
        names=models.plain_names(model),
        inference_steps=inference_steps,
        batch_size=batch_size,
    )


def mlp_workload(name: str, width: int = 128, depth: int = 3, steps: int = 4) -> harness.Workload:
    """The reference MLP (784-width^depth-10, tanh), T=steps, batch 256."""
    model = models.MLP(hidden=(width,) * depth)
    return _twin_workload(
        name, model, plain_pc.mlp_layers(depth), inference_steps=steps, batch_size=256
    )


def conv_workload(channels: tuple[int, ...]) -> harness.Workload:
    """pcx's VGG-5 CIFAR-10 setup: batch 128, T=7."""
    model = models.VGG5(channels=channels)
    return _twin_workload(
        "conv", model, plain_pc.vgg5_layers(len(channels)), inference_steps=7, batch_size=128
    )


def cnn_workload(channels: tuple[int, ...] = (16, 32), hidden: int = 128) -> harness.Workload:
    """The MNIST example's CNN with ``nn.Conv``: T=4, node SGD 0.01, Adam 1e-3, batch 256."""
    model = models.CNN(channels=channels, hidden=(hidden,))
    return _twin_workload(
        "cnn", model, plain_pc.cnn_layers(len(channels)), inference_steps=4, batch_size=256
    )


def resnet_workload(stem: int, stages: tuple[int, ...], blocks: int) -> harness.Workload:
    """``configs/resnet.py``'s ResNet and PC settings: T=4, node SGD 0.01, cross-entropy
    output energy, batch 128, Adam 3e-3 (constant here; the example decays it)."""
    return harness.Workload(
        name="resnet",
        model=models.ResNet(stem=stem, stages=stages, blocks_per_stage=blocks),
        layers=None,
        names=None,
        inference_steps=4,
        batch_size=128,
        weight_lr=3e-3,
        train_arg=True,
        output_energy=fpc.energies.cross_entropy,
    )


def lm_workload(vocab_size: int, width: int, context: int) -> harness.Workload:
    """``configs/lm.py``'s Transformer and PC settings (inference steps, node step, latent,
    output precision, batch, Adam's rate); nodes placed by ``fpc.with_nodes``."""
    from configs import lm
    from examples.lm import train as lm_train
    from examples.lm.models import CharTransformer  # the example's model, unchanged

    config = lm.get_config()
    return harness.Workload(
        name="lm",
        model=CharTransformer(vocab_size, context_length=context, width=width, mlp_dim=4 * width),
        layers=None,
        names=None,
        inference_steps=config.inference_steps,
        batch_size=config.batch_size,
        node_lr=config.node_learning_rate,
        weight_lr=config.learning_rate,
        output_energy=lm_train.output_energy(config),
        with_nodes=True,
        latent=config.latent,
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def _points(args) -> list[tuple[dict[str, Any], harness.Workload]]:
    """``(description, workload)`` for every point of ``args.workload``."""
    if args.workload == "reference":
        return [({"model": "mlp-784-128x3-10", "T": 4}, mlp_workload("reference"))]
    if args.workload == "conv":
        channels = tuple(int(c) for c in args.conv_channels.split(","))
        return [({"model": f"vgg5-{channels}", "T": 7}, conv_workload(channels))]
    if args.workload == "cnn":
        channels = _ints(args.cnn_channels)
        model = f"cnn-conv{channels}-dense{args.cnn_hidden}"
        return [({"model": model, "T": 4}, cnn_workload(channels, args.cnn_hidden))]
    if args.workload == "resnet":
        stages = _ints(args.resnet_stages)
        description = {
            "model": f"resnet-stem{args.resnet_stem}-stages{stages}x{args.resnet_blocks}",
            "T": 4,
        }
        return [(description, resnet_workload(args.resnet_stem, stages, args.resnet_blocks))]
    if args.workload == "lm":
        description = {"model": f"char-transformer-2x{args.lm_width}-context{args.lm_context}",
                       "T": 8}  # fmt: skip
        return [(description, lm_workload(_lm_data(args)[1], args.lm_width, args.lm_context))]
    values = [int(v) for v in args.values.split(",")] if args.values else SWEEPS[args.workload]
    key = {"steps": "steps", "width": "width", "depth": "depth"}[args.workload]
    return [({key: v}, mlp_workload(f"{args.workload}={v}", **{key: v})) for v in values]


def _lm_data(args) -> tuple[data_lib.Dataset, int]:
    """The language model's windows and vocabulary size (:func:`data_lib.characters`)."""
    text_dir = None if args.data_dir == "synthetic" else args.text_dir
    num_train = (args.batches or 100) * 32
    return data_lib.characters(text_dir, num_train, args.test_examples, args.lm_context)


def _data(args, workload: harness.Workload):
    """Device arrays ``(x_train, y_train, x_test, y_test)`` and the data set's name."""
    bs = workload.batch_size
    if args.workload == "lm":
        ds = _lm_data(args)[0]
    elif args.workload == "conv":
        ds = data_lib.synthetic(args.batches * bs, args.test_examples, (32, 32, 3))
    else:
        ds = data_lib.mnist_like(
            args.data_dir, (args.batches or 234) * bs, args.test_examples or 10000
        )
        if args.batches:
            n = args.batches * bs
            ds = ds._replace(x_train=ds.x_train[:n], y_train=ds.y_train[:n])
        if args.workload in IMAGE_WORKLOADS:
            ds = ds._replace(
                x_train=ds.x_train.reshape(-1, 28, 28, 1), x_test=ds.x_test.reshape(-1, 28, 28, 1)
            )
    if args.test_examples:
        ds = ds._replace(
            x_test=ds.x_test[: args.test_examples], y_test=ds.y_test[: args.test_examples]
        )
    arrays = tuple(jax.device_put(a) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    return arrays, ds.name


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """flax_pc / plain_jax (time, compile, memory) per style and loop, PC / backprop,
    rolled / unrolled inference loop, and ``epoch`` / ``batch`` style.

    Time ratios are the median over epochs (after the first) of the per-epoch
    ratio: both epochs of a pair ran in the same round, under the same load.
    Names: ``flax_pc`` and ``plain_jax`` have the inference loop unrolled,
    ``*_rolled`` rolled (see :func:`benchmarks.harness.make_variants`).
    """
    out = {}

    def ratio(name, a, b, key):
        if not (a and b and key in a and b.get(key)):
            return
        if isinstance(a[key], list):
            pairs = list(zip(a[key], b[key]))
            out[name] = statistics.median(x / y for x, y in pairs[1:] or pairs)
        else:
            out[name] = a[key] / b[key]

    def weights(name, a, b):
        if a and b:
            out[name] = harness.max_weight_difference(a["_weights"], b["_weights"])

    rolled = harness.ROLLED
    for style in harness.STYLES:
        get = {
            impl: results.get(f"{impl}/{style}")
            for impl in (*harness.IMPLS, "flax_pc" + rolled, "plain_jax" + rolled)
        }
        bp = get["backprop"]
        for loop in ("", rolled):
            flax, plain = get["flax_pc" + loop], get["plain_jax" + loop]
            pair = f"flax_pc{loop}/plain_jax{loop}"
            ratio(f"{style}: {pair} s/epoch", flax, plain, "epoch_s")
            ratio(f"{style}: {pair} cpu s/epoch", flax, plain, "epoch_cpu_s")
            ratio(f"{style}: {pair} compile", flax, plain, "compile_s")
            ratio(f"{style}: {pair} xla temp", flax, plain, "xla_temp_mib")
            weights(f"{style}: max |W_flax_pc{loop} - W_plain_jax{loop}|", flax, plain)
            for impl, res in ((f"flax_pc{loop}", flax), (f"plain_jax{loop}", plain)):
                ratio(f"{style}: {impl}/backprop s/epoch", res, bp, "epoch_s")
                ratio(f"{style}: {impl}/backprop cpu s/epoch", res, bp, "epoch_cpu_s")
                ratio(f"{style}: {impl}/backprop xla temp", res, bp, "xla_temp_mib")
                ratio(f"{style}: {impl}/backprop compile", res, bp, "compile_s")
        for impl in ("flax_pc", "plain_jax"):
            a, b = get[impl + rolled], get[impl]
            ratio(f"{style}: {impl}{rolled}/{impl} s/epoch", a, b, "epoch_s")
            ratio(f"{style}: {impl}{rolled}/{impl} cpu s/epoch", a, b, "epoch_cpu_s")
            ratio(f"{style}: {impl}{rolled}/{impl} compile", a, b, "compile_s")
        weights(f"{style}: max |W_flax_pc - W_flax_pc{rolled}|", get["flax_pc"],
                get["flax_pc" + rolled])  # fmt: skip
    impls = {r["impl"] for r in results.values()}
    for impl in sorted(impls):
        ratio(f"{impl}: epoch/batch s/epoch", results.get(f"{impl}/epoch"),
              results.get(f"{impl}/batch"), "epoch_s")  # fmt: skip
    return out


def format_table(point: dict[str, Any]) -> str:
    """One point's results and ratios as a text table."""
    header = (
        f"{'variant':22s} {'compile s':>9s} {'s/epoch':>9s} {'cpu s/ep':>9s} {'ms/batch':>9s} "
        f"{'examples/s':>11s} "
        f"{'XLA temp MiB':>12s} {'XLA peak MiB':>12s} {'test acc':>8s}"
    )
    lines = [f"== {point['workload']} ({point['dataset']}, {point['num_batches']} batches "
             f"of {point['batch_size']}, T={point['inference_steps']})", header]  # fmt: skip
    for name, r in point["results"].items():
        lines.append(
            f"{name:22s} {r['compile_s']:9.2f} {r['median_epoch_s']:9.3f} "
            f"{r['median_epoch_cpu_s']:9.3f} "
            f"{1e3 * r['median_epoch_s'] / point['num_batches']:9.1f} "
            f"{r['examples_per_s']:11.0f} {r.get('xla_temp_mib', float('nan')):12.1f} "
            f"{r.get('xla_peak_mib', float('nan')):12.1f} {r['test_accuracy']:8.4f}"
        )
    for name, value in point["ratios"].items():
        lines.append(f"  {name:50s} {value:.3g}")
    if point.get("flops"):
        f = point["flops"]
        plain = f"PC plain {f['plain_jax_pc']:.3g}, " if "plain_jax_pc" in f else ""
        lines.append(
            "  FLOPs/example (XLA, unrolled): "
            f"forward {f['forward']:.3g}, {plain}"
            f"PC flax_pc {f['flax_pc']:.3g}, backprop {f['backprop']:.3g}, "
            f"PC/backprop {f['pc_over_backprop']:.2f}"
            + (f", flax_pc/plain {f['flax_pc_over_plain_jax']:.3f}" if plain else "")
        )
    return "\n".join(lines)


def run_point(args, description: dict[str, Any], workload: harness.Workload) -> dict[str, Any]:
    """Measures every variant on one workload; returns a JSON-ready dict."""
    (x_train, y_train, x_test, y_test), dataset = _data(args, workload)
    params, model_state = workload.init(x_train)
    styles = args.styles.split(",")
    variants = harness.make_variants(
        workload,
        params,
        impls=args.impls.split(","),
        styles=styles,
        unrolls=UNROLLS[args.unroll],
        energy_trajectory=args.plain_energy_trajectory,
        model_state=model_state,
    )
    print(f"-- {workload.name}: {len(variants)} variants", flush=True)
    results = harness.run(
        variants,
        (x_train, y_train, x_test, y_test),
        batch_size=workload.batch_size,
        epochs=args.epochs,
        compile_repeats=args.compile_repeats,
        seed=workload.seed,
        log=(lambda s: print(s, flush=True)) if args.verbose else (lambda s: None),
    )
    point = {
        "workload": workload.name,
        **description,
        "dataset": dataset,
        "batch_size": workload.batch_size,
        "num_batches": x_train.shape[0] // workload.batch_size,
        "inference_steps": workload.inference_steps,
        "inference_loops": args.unroll,
        "plain_jax_energy_trajectory": args.plain_energy_trajectory,
        "results": results,
        "ratios": ratios(results),
    }
    if args.flops:
        from benchmarks.flops import (
            train_step_flops,  # imports flax_pc too; only when asked
        )

        batch = workload.batch_size
        point["flops"] = train_step_flops(
            workload, params, x_train[:batch], y_train[:batch], model_state
        )
    for r in results.values():
        r.pop("_weights")
    print(format_table(point), flush=True)
    return point


def _machine() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "device": f"{device.platform}:{device.device_kind}",
        "loadavg_start": os.getloadavg(),
        **_flax_pc_version(),
    }


def _flax_pc_version() -> dict[str, Any]:
    """The last commit that touched flax_pc/, and whether flax_pc/ has local changes."""
    repo = pathlib.Path(__file__).resolve().parents[1]

    def git(*args):
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    try:
        return {
            "flax_pc_commit": git("log", "-1", "--format=%h %s", "--", "flax_pc"),
            "flax_pc_dirty": bool(git("status", "--porcelain", "--", "flax_pc")),
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark described by the command line; returns what it wrote."""
    args = parse_args(argv)
    if args.workload == "all":
        names = WORKLOADS
        base = [*(argv if argv is not None else sys.argv[1:])]
        return {n: main([*base, "--workload", n]) for n in names}
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"argv": argv or sys.argv[1:], "machine": _machine(), "points": []}
    if "flax_pc_commit" in report["machine"]:
        dirty = " + local changes" if report["machine"]["flax_pc_dirty"] else ""
        print(f"flax_pc at {report['machine']['flax_pc_commit'][:60]}{dirty}", flush=True)
    start = time.perf_counter()
    for description, workload in _points(args):
        report["points"].append(run_point(args, description, workload))
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - start
    # Whole process (all variants); per-variant memory is XLA's buffer assignment above.
    report["process_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device_stats = jax.devices()[0].memory_stats()
    if device_stats:
        report["device_peak_mib"] = device_stats.get("peak_bytes_in_use", 0) / 2**20
    name = args.name or args.workload
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1, default=_json_default))
    if len(report["points"]) > 1 or args.workload in ("conv", *IMAGE_WORKLOADS):
        plots.plot(report, out_dir / f"{name}.png", title=_title(args, report))
    print(f"wrote {out_dir / name}.json ({report['wall_s']:.0f}s)")
    return report


def _title(args, report) -> str:
    what = {"steps": "inference steps T", "width": "hidden width", "depth": "hidden layers"}
    if args.workload in what:
        return f"MLP, sweep of the {what[args.workload]}"
    if args.workload == "cnn":
        return f"CNN (nn.Conv {args.cnn_channels}, Dense {args.cnn_hidden}), batch 256, T=4"
    if args.workload == "resnet":
        return f"ResNet (stem {args.resnet_stem}, stages {args.resnet_stages}), batch 128, T=4"
    return f"VGG-5 ({args.conv_channels}) on 32x32x3, batch 128, T=7"


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module doc)."""
    default_data = (
        data_lib.DEFAULT_DATA_DIR if data_lib.has_idx_files(data_lib.DEFAULT_DATA_DIR) else None
    )
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workload", choices=(*WORKLOADS, "all"), default="reference")
    p.add_argument(
        "--data_dir",
        default=default_data,
        help="Fashion-MNIST IDX files; synthetic data when they are not there "
        "(e.g. --data_dir synthetic); default %(default)s",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per variant; the first is not timed (default: reference 7, sweeps 4, "
        "conv, cnn and resnet 3)",
    )
    p.add_argument(
        "--batches",
        type=int,
        default=None,
        help="batches per epoch (default: reference the whole training set, sweeps 10, conv 2, "
        "cnn and resnet 20)",
    )
    p.add_argument(
        "--test_examples",
        type=int,
        default=None,
        help="test examples for the accuracy (default: reference all, sweeps 1000, conv 256, "
        "cnn and resnet 2000)",
    )
    p.add_argument(
        "--repeats",
        "--compile_repeats",
        dest="compile_repeats",
        type=int,
        default=3,
        help="cold compiles (lower + compile) per variant, interleaved",
    )
    p.add_argument("--values", default=None, help="sweep values, e.g. 1,4,16")
    p.add_argument(
        "--styles",
        default=None,
        help="batch,epoch (default: both for reference, conv and cnn, epoch for the MLP sweeps, "
        "batch for resnet)",
    )
    p.add_argument(
        "--impls",
        default=None,
        help=f"from {ALL_IMPLS} (default: all; cnn and resnet flax_pc,backprop)",
    )
    p.add_argument(
        "--conv_channels",
        default="32,64,128,128",
        help="VGG-5 channels; pcx's are 128,256,512,512 (about 16x the FLOPs: use a GPU)",
    )
    p.add_argument(
        "--unroll",
        nargs="?",
        const="true",
        choices=tuple(UNROLLS),
        default=None,
        help="inference loop of flax_pc and plain-JAX PC: true (flax_pc's default: fully "
        "unrolled; plain JAX a Python loop), false (rolled lax.scan; plain JAX fori_loop) or "
        "both (a variant each, the rolled ones named *_rolled); default both for cnn, "
        "else true",
    )
    p.add_argument("--cnn_channels", default="16,32", help="cnn: conv channels")
    p.add_argument("--cnn_hidden", type=int, default=128, help="cnn: Dense width")
    p.add_argument("--resnet_stem", type=int, default=16, help="resnet: stem channels")
    p.add_argument("--resnet_stages", default="16,32,64", help="resnet: channels per stage")
    p.add_argument("--resnet_blocks", type=int, default=1, help="resnet: blocks per stage")
    p.add_argument("--lm_width", type=int, default=64, help="lm: the Transformer's width")
    p.add_argument("--lm_context", type=int, default=128, help="lm: characters per window")
    p.add_argument(
        "--text_dir",
        default=str(data_lib.DEFAULT_TEXT_DIR),
        help="lm: a folder with Tiny Shakespeare's input.txt; synthetic text when it is not "
        "there (or with --data_dir synthetic); default %(default)s",
    )
    p.add_argument(
        "--plain_energy_trajectory",
        action="store_true",
        help="plain JAX also returns the energy at every inference step, as flax_pc does",
    )
    p.add_argument("--no_flops", dest="flops", action="store_false", help="skip the FLOP count")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--name", default=None, help="results file name (default: the workload)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every compile and epoch")
    args = p.parse_args(argv)
    for flag, value in DEFAULTS.get(args.workload, {}).items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    return args  # fmt: skip


if __name__ == "__main__":
    main()
