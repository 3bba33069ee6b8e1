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

each image is decoded from its latent alone. With
``config.node_optimizer='langevin'`` (:func:`flax_pc.langevin`), training's
inference samples the latents' posterior instead of finding its mode: Monte
Carlo PC (MCPC). After training, images sampled from the model
(:func:`models.sample`) are scored by a classifier trained by backprop on the
same data (``scores.py``). The workdir (``examples/common/workdir.py``) gets
``config.json``, ``metrics.jsonl``, TensorBoard summaries, a checkpoint per
epoch (a rerun resumes), ``curves.png``, ``samples.png``, ``generated.png``
and ``scores.json``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import image_grid, input_pipeline
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError, FieldChecker
from examples.generative import models, scores
from examples.mnist import train as mnist_train
from examples.mnist.models import ACTIVATIONS

Config = ml_collections.ConfigDict
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


def validate_config(config: Config) -> None:
    """Checks every field the example reads; raises :class:`ConfigError` on the first bad one.

    flax_pc checks its own (``inference_steps``) when the state is built.
    """
    check = FieldChecker(config)
    check.data_fields(input_pipeline.DATASETS)
    check.positive_int("latent_size", "batch_size", "num_epochs", "checkpoints_to_keep")
    check.sizes("hidden_sizes", required=False)
    check.one_of("activation", ACTIVATIONS)
    check.one_of("output_energy", OUTPUT_ENERGIES)
    check.positive_float("node_learning_rate", "learning_rate", "eval_node_learning_rate")
    check.fraction("node_momentum", "eval_node_momentum")
    check.one_of("node_optimizer", ("sgd", "langevin"))
    check.non_negative_float("temperature")
    check.requires(
        "node_momentum", not config.node_momentum or config.node_optimizer == "sgd",
        "needs config.node_optimizer = 'sgd' (Langevin steps take no momentum); use 0",
    )  # fmt: skip
    check.check("hidden_nodes", isinstance(config.hidden_nodes, bool), "True or False")
    check.non_negative_float("weight_decay", "noise_stddev")
    check.non_negative_int("seed")
    check.positive_int("eval_size", "eval_inference_steps", "grid_columns", "score_samples")
    check.requires(
        "grid_columns", config.grid_columns <= config.eval_size,
        f"is larger than config.eval_size = {config.eval_size} (the grid shows evaluated images)",
    )  # fmt: skip


def create_model(config: Config) -> models.Decoder:
    """The decoder that ``config`` describes (its latent starts at the prior mean)."""
    return models.Decoder(
        latent_size=config.latent_size,
        hidden_sizes=tuple(config.hidden_sizes),
        image_size=IMAGE_SIZE,
        act=ACTIVATIONS[config.activation],
        to_image=TO_IMAGE[config.output_energy],
        hidden_nodes=config.hidden_nodes,
    )


def create_node_optimizer(learning_rate: float, momentum: float) -> optax.GradientTransformation:
    """SGD on the value nodes (``momentum=0``: plain SGD)."""
    return optax.sgd(learning_rate, momentum=momentum or None)


def create_training_node_optimizer(config: Config) -> optax.GradientTransformation:
    """Training's inference: SGD (PC: the mode) or Langevin steps (MCPC: samples)."""
    if config.node_optimizer == "langevin":
        return fpc.langevin(config.node_learning_rate, config.temperature)
    return create_node_optimizer(config.node_learning_rate, config.node_momentum)


def create_train_state(config: Config, rng: jax.Array) -> fpc.PCTrainState:
    """A fresh :class:`flax_pc.PCTrainState` for ``config``'s decoder; ``rng`` draws the params."""
    model = create_model(config)
    # One compiled init instead of dozens of eager ops: faster start-up.
    init = jax.jit(lambda rng: model.init(rng, models.prior_mean(model, 1)))
    return fpc.PCTrainState.create(
        apply_fn=model.apply,
        params=init(rng)["params"],
        tx=optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
        inference=fpc.Inference(create_training_node_optimizer(config), config.inference_steps),
        output_energy=OUTPUT_ENERGIES[config.output_energy],
    )


class EvalSet(NamedTuple):
    """The fixed held-out images and what the evaluation infers from them."""

    images: jax.Array  # [N, 784] clean test images
    noisy: jax.Array  # [N, 784] images + N(0, noise_stddev^2) noise, clipped to [0, 1]
    mean_image: jax.Array  # [784] the mean training image


def make_eval_set(config: Config, splits: input_pipeline.Splits, rng: jax.Array) -> EvalSet:
    """The first ``config.eval_size`` test images, their noisy copies, the mean image."""
    if config.eval_size > len(splits.test_images):
        raise ConfigError(
            f"config.eval_size = {config.eval_size} is larger than the test set "
            f"({len(splits.test_images)} examples)."
        )
    images = jnp.asarray(splits.test_images[: config.eval_size].reshape(-1, IMAGE_SIZE))
    noise = config.noise_stddev * jax.random.normal(rng, images.shape)
    mean_image = jnp.asarray(splits.train_images.reshape(-1, IMAGE_SIZE).mean(0))
    return EvalSet(images, jnp.clip(images + noise, 0.0, 1.0), mean_image)


def make_reconstruct(config: Config) -> Callable[..., tuple[jax.Array, jax.Array]]:
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
    inference = fpc.Inference(node_tx, config.eval_inference_steps)
    energy = OUTPUT_ENERGIES[config.output_energy]

    @jax.jit
    def reconstruct(params, targets, masks):
        prior = models.prior_mean(model, targets.shape[0])
        nodes = fpc.init_nodes(model.apply, params, prior)
        nodes, _ = fpc.infer(
            model.apply, params, nodes, prior, targets, inference=inference,
            output_energy=fpc.energies.masked(energy, masks),
        )  # fmt: skip
        latent = nodes[models.LATENT]["value"]
        return models.decode(model, params, latent), latent

    return reconstruct


def make_evaluate(config: Config) -> Callable[..., tuple[dict, dict]]:
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


def save_samples(
    config: Config,
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
        ("samples\n(ancestral)", models.sample(create_model(config), params, rng, k), None),
    ]
    rows = [(label, np.asarray(x), mask) for label, x, mask in rows]
    image_grid.plot_samples(rows, path, IMAGE_SHAPE, title=title)


def score_samples(
    config: Config, params: Any, splits: input_pipeline.Splits, rng: jax.Array, path: pathlib.Path
) -> dict[str, Any]:
    """Scores ``config.score_samples`` samples of the model: ``scores.json``, ``generated.png``.

    The classifier comes from ``path`` (``scores.CLASSIFIER_FILE``), or is trained
    on the training split and saved there first. The reference: as many
    training images, scored the same way.
    """
    classifier = scores.load_or_train(
        path / scores.CLASSIFIER_FILE, splits.train_images, splits.train_labels
    )
    n = config.score_samples
    samples = np.asarray(models.sample(create_model(config), params, rng, n))
    result = {
        "sampler": "ancestral",
        "num_samples": n,
        "classifier_test_accuracy": scores.accuracy(
            classifier, splits.test_images, splits.test_labels
        ),
        "samples": scores.sample_scores(classifier, samples, splits.test_images),
        "training_images": scores.sample_scores(
            classifier, splits.train_images[:n], splits.test_images
        ),
    }
    (path / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["samples"]
    title = (
        f"Samples of the model (ancestral): {100 * s['confident']:.1f}% confidently classified, "
        f"label entropy {s['label_entropy']:.2f} nats, Fréchet distance {s['frechet_distance']:.1f}"
    )
    rows = [("", samples[i : i + 10], None) for i in range(0, min(n, 100), 10)]
    image_grid.plot_samples(rows, path / "generated.png", IMAGE_SHAPE, title=title)
    return result


#: The panels of curves.png (besides the energy during inference): the record keys drawn.
CURVES = {
    "Held-out MSE per pixel": (
        "test_mse", "masked_mse", "mean_image_mse", "denoised_mse", "noisy_mse"
    ),
    "Training energy after inference": ("train_energy",),
}  # fmt: skip


def log_line(r: dict[str, Any]) -> str:
    return (
        f"train energy {r['train_energy']:.2f}, test MSE {r['test_mse']:.4f}, bottom half from "
        f"top half {r['masked_mse']:.4f} (mean image {r['mean_image_mse']:.4f}), denoised "
        f"{r['denoised_mse']:.4f} (noisy {r['noisy_mse']:.4f}) ({r['seconds']:.1f} s)"
    )


def train_and_evaluate(config: Config, workdir: str) -> fpc.PCTrainState:
    """Trains the decoder for ``config.num_epochs``, evaluating after each epoch.

    Resumes from the newest readable checkpoint in ``workdir``. Bad input (a
    config field, the data, the workdir) raises a
    :class:`~examples.common.workdir.UserError` before anything in ``workdir`` changes.
    """
    validate_config(config)
    with workdir_lib.Workdir(workdir, config) as run:
        parallel = fpc.DataParallel.create()
        splits, num_train = input_pipeline.load_splits(config, parallel.num_devices)
        keys = jax.random.split(jax.random.key(config.seed), 5)
        init_rng, data_rng, noise_rng, sample_rng, score_rng = keys
        eval_set = parallel.replicate(workdir_lib.to_host(make_eval_set(config, splits, noise_rng)))
        with workdir_lib.config_errors():  # flax_pc checks its own arguments here
            state = parallel.replicate(create_train_state(config, init_rng))
        logging.info(
            f"{config.dataset}: {num_train} training images, {config.eval_size} test images "
            f"held out. Decoder {decoder_name(config)}, {config.output_energy} output energy, "
            f"{sum(p.size for p in jax.tree_util.tree_leaves(state.params)):,} params; "
            f"{config.inference_steps} inference steps ({config.eval_inference_steps} at test "
            f"time); on {workdir_lib.describe_devices(parallel.num_devices)}."
        )
        # The model's input is the prior mean for every example; the images are its targets.
        # Each process puts its share of them on its devices.
        images = splits.train_images[:num_train].reshape(-1, IMAGE_SIZE)
        prior = np.zeros((num_train, config.latent_size), np.float32)
        train_images, prior = parallel.shard(input_pipeline.process_share((images, prior)))
        train_epoch = mnist_train.make_train_epoch(
            "epoch", config.batch_size, parallel.batch_sharding
        )
        evaluate = make_evaluate(config)
        state = run.resume(state)

        def run_epoch(state, epoch):
            rng = jax.random.fold_in(data_rng, epoch)
            state, metrics = train_epoch(state, prior, train_images, rng)
            return state, {
                **mnist_train.summarize_epoch(metrics), **evaluate(state.params, eval_set)[0]
            }  # fmt: skip

        rates = ("node_learning_rate", "eval_node_learning_rate", "learning_rate")
        examples = (num_train // config.batch_size) * config.batch_size
        state = run.train(
            state, run_epoch, log_line=log_line, learning_rates=rates, examples_per_epoch=examples
        )
        if workdir_lib.is_primary():  # process 0 reports and draws
            report(config, state, run, splits, eval_set, evaluate, (sample_rng, score_rng))
    return state


def decoder_name(config: Config) -> str:
    """``'16-256-784'``: the decoder's widths, from the latent to the image."""
    return "-".join(map(str, (config.latent_size, *config.hidden_sizes, IMAGE_SIZE)))


def report(config, state, run, splits, eval_set, evaluate, rngs) -> None:
    """Draws ``curves.png``, ``samples.png`` and ``generated.png``, writes ``scores.json``, logs."""
    sample_rng, score_rng = rngs
    final, last_images = evaluate(state.params, eval_set)
    final = {k: float(v) for k, v in workdir_lib.to_host(final).items()}
    epochs = max(config.num_epochs, run.start_epoch)
    method = "MCPC" if config.node_optimizer == "langevin" else "PC"
    title = f"{method} decoder {decoder_name(config)} on {config.dataset}, "
    title += f"{config.output_energy}, after {epochs} epochs"
    if run.history:
        workdir_lib.plot_curves(run.history, run.path / "curves.png", CURVES, title)
    params, eval_set, last_images = workdir_lib.to_host((state.params, eval_set, last_images))
    save_samples(config, params, eval_set, last_images, sample_rng, run.path / "samples.png", title)
    result = score_samples(config, params, splits, score_rng, run.path)
    s, data = result["samples"], result["training_images"]
    logging.info(
        f"{config.score_samples} samples, scored by a backprop classifier "
        f"({100 * result['classifier_test_accuracy']:.1f}% test accuracy): "
        f"{100 * s['confident']:.1f}% confidently classified (training images "
        f"{100 * data['confident']:.1f}%), label entropy {s['label_entropy']:.3f} nats "
        f"({data['label_entropy']:.3f}; ln 10 = 2.303), Fréchet distance to the test images "
        f"{s['frechet_distance']:.2f} ({data['frechet_distance']:.2f}). In scores.json."
    )
    logging.info(
        f"Final held-out reconstruction MSE {final['test_mse']:.4f}; bottom half from the top "
        f"half {final['masked_mse']:.4f} vs {final['mean_image_mse']:.4f} for the mean image "
        f"(after {epochs} epochs)."
    )
