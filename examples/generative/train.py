"""Trains a predictive-coding decoder on Fashion-MNIST as a generative model.

The model (``models.Decoder``) takes the prior mean of its latent (zeros) as
input and predicts an image; training clamps the image through the output
energy, infers the latent and hidden nodes, then takes one weight step
(:class:`flax_pc.PCTrainState`, a whole epoch per jitted
:func:`flax_pc.train_epoch`). After every epoch, on a fixed subset of the test
set, :func:`flax_pc.infer` finds the latent of each image from

- the full image: the reconstruction MSE;
- its top half only (:func:`flax_pc.energies.masked`): the MSE of the filled-in
  bottom half, against that of the mean training image;
- a noisy copy: the MSE of the denoised image, against that of the noisy one;

each image is decoded from its latent alone. The workdir gets ``config.json``,
``metrics.jsonl``, an orbax checkpoint per epoch (rerunning with the same
workdir resumes), ``curves.png`` and ``samples.png``.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import cli, config_checks, devices, input_pipeline, loop, records
from examples.common.activations import ACTIVATIONS
from examples.common.config_checks import ConfigError
from examples.generative import models, plots

#: Output energies, and how each turns the model's output into an image.
OUTPUT_ENERGIES = {
    "bernoulli": fpc.energies.bernoulli,
    "squared_error": fpc.energies.squared_error,
}
TO_IMAGE: dict[str, Callable[[jax.Array], jax.Array]] = {
    "bernoulli": jax.nn.sigmoid,  # the output is logits
    "squared_error": lambda output: output,  # the output is the pixels
}
IMAGE_SHAPE = input_pipeline.IMAGE_SHAPE[:2]
IMAGE_SIZE = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
#: 1 for the pixels of the top half of a flattened image (rows 0..13).
TOP_HALF = (np.arange(IMAGE_SIZE) < IMAGE_SIZE // 2).astype(np.float32)
#: Fields that decide the shapes (or the meaning) of a checkpoint's arrays:
#: a workdir trained with other values cannot be resumed.
MODEL_FIELDS = ("dataset", "latent_size", "hidden_sizes", "activation", "output_energy")


#: Errors the user fixes; ``main.py`` turns them into a one-line message.
USER_ERRORS = cli.USER_ERRORS


# --- Config ------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every field of ``config``; raises :class:`ConfigError` on the first bad one."""

    checker = config_checks.FieldChecker(config)

    checker.data_fields(input_pipeline.DATASETS)
    checker.positive_int("latent_size")
    checker.sizes("hidden_sizes", required=False)
    checker.one_of("activation", ACTIVATIONS)
    checker.one_of("output_energy", OUTPUT_ENERGIES)
    checker.positive_int("inference_steps")
    checker.positive_float("node_learning_rate")
    checker.fraction("node_momentum")
    checker.positive_float("learning_rate")
    checker.non_negative_float("weight_decay")
    checker.positive_int("batch_size")
    checker.positive_int("num_epochs")
    checker.non_negative_int("seed")
    checker.positive_int("checkpoints_to_keep")
    checker.positive_int("eval_size")
    checker.positive_int("eval_inference_steps")
    checker.positive_float("eval_node_learning_rate")
    checker.fraction("eval_node_momentum")
    checker.non_negative_float("noise_stddev")
    checker.positive_int("grid_columns")
    if config.grid_columns > config.eval_size:
        raise ConfigError(
            f"config.grid_columns = {config.grid_columns} is larger than config.eval_size = "
            f"{config.eval_size} (the grid shows evaluated test images)."
        )


def _check_eval_size(config: ml_collections.ConfigDict, num_test: int) -> None:
    if config.eval_size > num_test:
        raise ConfigError(
            f"config.eval_size = {config.eval_size} is larger than the test set "
            f"({num_test} examples)."
        )


# --- Model and train state ---------------------------------------------------


def create_model(config: ml_collections.ConfigDict) -> models.Decoder:
    """The decoder that ``config`` describes (its latent starts at the prior mean)."""
    return models.Decoder(
        hidden_sizes=tuple(config.hidden_sizes),
        image_size=IMAGE_SIZE,
        activation=config.activation,
    )


def create_node_optimizer(learning_rate: float, momentum: float) -> optax.GradientTransformation:
    """SGD on the value nodes (``momentum=0``: plain SGD)."""
    return optax.sgd(learning_rate, momentum=momentum or None)


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array) -> fpc.PCTrainState:
    """A fresh :class:`flax_pc.PCTrainState` for ``config``'s decoder.

    Args:
      config: the hyperparameters.
      rng: the key for the initial params.
    """
    model = create_model(config)
    # One compiled init instead of dozens of eager ops: faster start-up.
    init = jax.jit(lambda rng: model.init(rng, models.prior_mean(1, config.latent_size)))
    return fpc.PCTrainState.create(
        apply_fn=model.apply,
        params=init(rng)["params"],
        tx=optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
        node_tx=create_node_optimizer(config.node_learning_rate, config.node_momentum),
        inference_steps=config.inference_steps,
        output_energy=OUTPUT_ENERGIES[config.output_energy],
    )


# --- Evaluation --------------------------------------------------------------


class EvalSet(NamedTuple):
    """The fixed held-out images and what the evaluation infers from them."""

    images: jax.Array  # [N, 784] clean test images
    noisy: jax.Array  # [N, 784] images + N(0, noise_stddev^2) noise, clipped to [0, 1]
    mean_image: jax.Array  # [784] the mean training image


def make_eval_set(
    config: ml_collections.ConfigDict, splits: input_pipeline.Splits, rng: jax.Array
) -> EvalSet:
    """The first ``config.eval_size`` test images, their noisy copies, the mean image."""
    images = jnp.asarray(splits.test_images[: config.eval_size].reshape(-1, IMAGE_SIZE))
    noise = config.noise_stddev * jax.random.normal(rng, images.shape)
    mean_image = jnp.asarray(splits.train_images.reshape(-1, IMAGE_SIZE).mean(0))
    return EvalSet(images, jnp.clip(images + noise, 0.0, 1.0), mean_image)


def make_reconstruct(config: ml_collections.ConfigDict) -> Callable[..., jax.Array]:
    """A jitted ``reconstruct(params, targets, masks) -> (images, latents)``.

    Infers the latent of each target from its pixels where ``masks`` is 1
    (``config.eval_inference_steps`` steps of SGD on the nodes, from the prior
    mean), then decodes the image from that latent alone.
    """
    model = create_model(config)
    # Smaller steps than in training: the weights grow during training, and so
    # does the curvature of the energy in the nodes; inference at test time
    # must converge, not just descend for a few steps.
    node_tx = create_node_optimizer(config.eval_node_learning_rate, config.eval_node_momentum)
    energy = OUTPUT_ENERGIES[config.output_energy]
    to_image = TO_IMAGE[config.output_energy]

    @jax.jit
    def reconstruct(params, targets, masks):
        prior = models.prior_mean(targets.shape[0], config.latent_size)
        nodes = fpc.init_nodes(model.apply, params, prior)
        nodes, _ = fpc.infer(
            model.apply, params, nodes, prior, targets,
            node_tx=node_tx, inference_steps=config.eval_inference_steps,
            output_energy=fpc.energies.masked(energy, masks),
        )  # fmt: skip
        latent = nodes[models.LATENT]["value"]
        return to_image(models.decode(model, params, latent)), latent

    return reconstruct


def make_evaluate(config: ml_collections.ConfigDict) -> Callable[..., tuple[dict, dict]]:
    """A jitted ``evaluate(params, eval_set) -> (metrics, images)``.

    One inference over the full images, their top halves and the noisy
    copies together (each example's nodes move independently of the others).
    ``metrics``: the MSEs per pixel, and the mean square of the latents inferred
    from the full images; ``images``: the reconstructions, fill-ins and
    denoised images.
    """
    reconstruct = make_reconstruct(config)

    @jax.jit
    def evaluate(params, eval_set: EvalSet):
        x, noisy, mean_image = eval_set
        n = x.shape[0]
        every_pixel = jnp.ones_like(x)
        top_half = jnp.broadcast_to(jnp.asarray(TOP_HALF), x.shape)
        outputs, latents = reconstruct(
            params,
            jnp.concatenate([x, x, noisy]),
            jnp.concatenate([every_pixel, top_half, every_pixel]),
        )
        recon, filled, denoised = outputs[:n], outputs[n : 2 * n], outputs[2 * n :]
        bottom = slice(IMAGE_SIZE // 2, None)
        metrics = {
            "test_mse": jnp.mean((recon - x) ** 2),
            "masked_mse": jnp.mean((filled[:, bottom] - x[:, bottom]) ** 2),
            "mean_image_mse": jnp.mean((mean_image[bottom] - x[:, bottom]) ** 2),
            "denoised_mse": jnp.mean((denoised - x) ** 2),
            "noisy_mse": jnp.mean((noisy - x) ** 2),
            # 1 if the latents of the test images were distributed like the prior's draws.
            "latent_mean_square": jnp.mean(latents[:n] ** 2),
        }
        return metrics, {"reconstructions": recon, "filled": filled, "denoised": denoised}

    return evaluate


def sample_prior(config: ml_collections.ConfigDict, params: Any, rng: jax.Array, n: int):
    """``n`` images decoded from latents drawn from the N(0, I) prior."""
    sampler = create_model(config).clone(latent_init="normal")
    prior = models.prior_mean(n, config.latent_size)
    # init='normal' draws the latent; the hidden nodes start at their predictions.
    nodes = fpc.init_nodes(sampler.apply, params, prior, rng=rng)
    output = sampler.apply({"params": params, fpc.NODES: nodes}, prior)
    return TO_IMAGE[config.output_energy](output)


@jax.jit
def summarize_epoch(metrics):
    """Reduces ``train_epoch``'s per-batch metrics to per-epoch means."""
    return {
        "train_energy": jnp.mean(metrics["energy"][:, -1]),
        "energy_per_step": jnp.mean(metrics["energy"], axis=0),
        "node_energies": jax.tree_util.tree_map(jnp.mean, metrics["node_energies"]),
    }


def save_samples(
    config: ml_collections.ConfigDict,
    params: Any,
    eval_set: EvalSet,
    images: dict[str, jax.Array],
    rng: jax.Array,
    path: pathlib.Path,
    title: str,
) -> None:
    """Writes ``samples.png``: one labelled row per kind of image, ``grid_columns`` each."""
    k = config.grid_columns
    originals = np.asarray(eval_set.images[:k])
    hidden = np.broadcast_to(1.0 - TOP_HALF, originals.shape)
    rows = [
        ("originals", originals, None),
        ("reconstructed", images["reconstructions"][:k], None),
        ("top half given", originals, hidden),
        ("bottom half\nfilled in", images["filled"][:k], None),
        (f"noisy\n(σ = {config.noise_stddev:g})", eval_set.noisy[:k], None),
        ("denoised", images["denoised"][:k], None),
        ("samples\nz ~ N(0, I)", sample_prior(config, params, rng, k), None),
    ]
    rows = [(label, np.asarray(x), mask) for label, x, mask in rows]
    plots.plot_samples(rows, path, IMAGE_SHAPE, title=title)


# --- The loop ----------------------------------------------------------------


def _format_epoch(record: dict[str, Any]) -> str:
    return (
        f"train energy {record['train_energy']:.2f}, test MSE {record['test_mse']:.4f}, bottom "
        f"half from top half {record['masked_mse']:.4f} (mean image "
        f"{record['mean_image_mse']:.4f}), denoised {record['denoised_mse']:.4f} (noisy "
        f"{record['noisy_mse']:.4f}) ({record['seconds']:.1f} s, of which training "
        f"{record['train_seconds']:.1f} s)"
    )


def _progress_fields(record: dict[str, Any]) -> dict[str, str]:
    return {"energy": f"{record['train_energy']:.2f}", "test_mse": f"{record['test_mse']:.4f}"}


def _check_finite(record: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    advice = (
        f"lower config.node_learning_rate (now {config.node_learning_rate}), "
        f"config.eval_node_learning_rate (now {config.eval_node_learning_rate}) or "
        f"config.learning_rate (now {config.learning_rate})"
    )
    loop.check_finite(
        record,
        {"test_mse": "test MSE", "masked_mse": "masked MSE", "denoised_mse": "denoised MSE"},
        "training or test-time inference",
        advice,
    )


def _final_line(record: dict[str, Any], epochs: int) -> str:
    return (
        f"Final held-out reconstruction MSE {record['test_mse']:.4f}; bottom half from the top "
        f"half {record['masked_mse']:.4f} vs {record['mean_image_mse']:.4f} for the mean image "
        f"(after {epochs} epochs)."
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> fpc.PCTrainState:
    """Trains the decoder for ``config.num_epochs``, evaluating after each epoch.

    Resumes from the latest checkpoint in ``workdir`` if there is one.

    Args:
      config: the hyperparameters (see ``configs/generative.py``).
      workdir: where checkpoints, metrics and plots go.

    Returns:
      The final train state.

    Raises:
      ConfigError, records.WorkdirError, input_pipeline.DataError: before anything in
        ``workdir`` is changed.
      DivergedError: the energy or an MSE became NaN or infinite (the
        checkpoint of the last good epoch is kept).
    """
    return loop.in_workdir(config, workdir, validate_config, _train_and_evaluate)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir_path: pathlib.Path
) -> fpc.PCTrainState:
    """:func:`train_and_evaluate` in the workdir it holds."""
    records.check_workdir(config, workdir_path, fields=MODEL_FIELDS)
    parallel = fpc.DataParallel.create()
    splits, num_train = devices.load_splits(config, parallel.num_devices)
    _check_eval_size(config, len(splits.test_images))
    logging.info(
        "%s: %d training images, %d of the %d test images held out for evaluation (%s).",
        config.dataset,
        num_train,
        config.eval_size,
        len(splits.test_images),
        config.data_dir or ("synthetic" if config.dataset == "synthetic" else "TFDS"),
    )

    init_rng, data_rng, noise_rng, sample_rng = jax.random.split(jax.random.key(config.seed), 4)
    state = parallel.replicate(create_train_state(config, init_rng))
    logging.info(
        "Decoder %s, %s output energy, %d params; %d inference steps (%d at test time); on %s.",
        "-".join(map(str, (config.latent_size, *config.hidden_sizes, IMAGE_SIZE))),
        config.output_energy,
        sum(p.size for p in jax.tree_util.tree_leaves(state.params)),
        config.inference_steps,
        config.eval_inference_steps,
        devices.describe(parallel.num_devices),
    )

    resumed = records.resume(
        workdir_path, config, state, num_epochs=config.num_epochs, primary=devices.is_primary()
    )
    start_epoch, history = resumed.start_epoch, resumed.history

    # The model's input is the prior mean for every example; the images are its targets.
    # Each process puts its share of them on its devices.
    train_images, prior = parallel.shard(
        (
            devices.process_share(splits.train_images[:num_train].reshape(-1, IMAGE_SIZE)),
            devices.process_share(np.zeros((num_train, config.latent_size), np.float32)),
        )
    )
    eval_set = parallel.replicate(devices.to_host(make_eval_set(config, splits, noise_rng)))
    train_epoch = loop.jit_train_epoch(config.batch_size, parallel.batch_sharding)
    evaluate = make_evaluate(config)
    examples_per_epoch = (num_train // config.batch_size) * config.batch_size

    images = None

    def run_epoch(state, epoch):
        nonlocal images
        start = time.perf_counter()
        state, train_metrics = train_epoch(
            state, prior, train_images, jax.random.fold_in(data_rng, epoch)
        )
        summary = devices.to_host(summarize_epoch(train_metrics))
        train_seconds = time.perf_counter() - start
        eval_metrics, images = evaluate(state.params, eval_set)
        eval_metrics = devices.to_host(eval_metrics)
        return state, {
            "epoch": epoch,
            "train_energy": float(summary["train_energy"]),
            **{k: float(v) for k, v in eval_metrics.items()},
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "examples_per_second": examples_per_epoch / train_seconds,
            "energy_per_step": [float(e) for e in summary["energy_per_step"]],
            "node_energies": {k: float(v) for k, v in summary["node_energies"].items()},
        }

    state = loop.train_epochs(
        resumed,
        run_epoch,
        log_line=_format_epoch,
        progress_fields=_progress_fields,
        check=lambda record: _check_finite(record, config),
    )
    if not devices.is_primary():  # process 0 reports and draws
        return state

    epochs = max(config.num_epochs, start_epoch)
    if images is None:  # Nothing trained in this run: evaluate the restored state.
        final, images = evaluate(state.params, eval_set)
        final = {k: float(v) for k, v in devices.to_host(final).items()}
    else:
        final = history[-1]
    title = (
        f"PC decoder {'-'.join(map(str, (config.latent_size, *config.hidden_sizes, IMAGE_SIZE)))}"
        f" on {config.dataset}, {config.output_energy}, after {epochs} epochs"
    )
    if history:
        plots.plot_curves(history, workdir_path / "curves.png", title=title)
    save_samples(
        config,
        devices.to_host(state.params),
        devices.to_host(eval_set),
        devices.to_host(images),
        sample_rng,
        workdir_path / "samples.png",
        title,
    )
    logging.info(_final_line(final, epochs))
    return state
