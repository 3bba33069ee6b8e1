"""Associative memory: a generative PC network stores N images and retrieves them from cues.

Storing (:func:`store`): a :class:`~models.Memory` learns to generate the N
images, each from a latent node of its own. Every pass runs a few steps of
:func:`flax_pc.infer` on all N latents (full batch), continuing from where the
last pass left them, then one Adam step on :func:`flax_pc.energy` (its
learning rate decayed to 0 by a cosine over the last passes: with a constant
rate the energy spikes now and then, and a run can end on a spike).

Retrieving (:func:`retrieve`): from the prior mean, inference with the cue
clamped through a masked output energy (``fpc.energies.masked``): the top
half of each image (the bottom half unknown), or a noisy copy (every pixel
known, but noisy). The retrieved image is the network's prediction. It is
correct if its mean squared error per pixel to the stored image is below
``config.threshold``. The same cues go to a classical Hopfield network
(Storkey rule) and a modern Hopfield network.

The workdir gets ``metrics.jsonl`` (one line per N, with ``retrieval_rate``)
and ``retrievals_<N>.png``.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import input_pipeline
from examples.common.workdir import FieldChecker
from examples.memory import models, plots

#: An ``ml_collections.ConfigDict`` of ``configs/memory.py``'s fields (see validate_config).
Config = Any

#: The cues, by name: each is ``(cue, mask)`` from the images.
CUES = ("half_masked", "noisy")


def validate_config(config: Config) -> None:
    """Raises :class:`~examples.common.workdir.ConfigError` on the first bad field."""
    check = FieldChecker(config)
    check.data_fields(input_pipeline.DATASETS)
    check.sizes("memories")
    check.positive_int("latent_size", "hidden_size", "epochs", "inference_steps")
    check.positive_int("retrieval_steps", "hopfield_sweeps")
    check.positive_float("prior_precision", "node_learning_rate", "learning_rate")
    check.positive_float("retrieval_node_learning_rate", "threshold", "hopfield_beta")
    check.non_negative_float("noise_stddev")
    check.check(
        "decay_fraction", isinstance(config.decay_fraction, (int, float))
        and 0 < config.decay_fraction <= 1, "a number in (0, 1]",
    )  # fmt: skip
    check.non_negative_int("seed")


def learning_rate_schedule(config: Config) -> optax.Schedule:
    """Constant ``config.learning_rate``, then a cosine decay to 0 over the last passes."""
    decay = max(1, round(config.decay_fraction * config.epochs))
    return optax.join_schedules(
        [
            optax.constant_schedule(config.learning_rate),
            optax.cosine_decay_schedule(config.learning_rate, decay),
        ],
        [config.epochs - decay],
    )


def store(config: Config, images: jax.Array) -> tuple[fpc.PCTrainState, float]:
    """Trains a :class:`~models.Memory` on ``images`` ``[N, n]``: its state, energy per image."""
    model = models.Memory(
        config.latent_size, config.hidden_size, images.shape[-1], config.prior_precision
    )
    prior_mean = jnp.zeros((len(images), config.latent_size))
    params = model.init(jax.random.key(config.seed), prior_mean[:1])["params"]
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params,
        tx=optax.adam(learning_rate_schedule(config)),
        inference=fpc.Inference(optax.sgd(config.node_learning_rate), config.inference_steps),
    )  # fmt: skip
    nodes = fpc.init_nodes(model.apply, params, prior_mean)  # every latent at the prior mean

    @jax.jit
    def passes(state, nodes):  # every pass in one compiled loop
        def one(carry, _):
            state, nodes = carry
            nodes, _ = fpc.infer(
                state.apply_fn, state.params, nodes, prior_mean, images, inference=state.inference
            )

            def total(params):
                return fpc.energy(state.apply_fn, params, nodes, prior_mean, images).total

            energy, grads = jax.value_and_grad(total)(state.params)
            return (state.apply_gradients(grads=grads), nodes), energy / len(images)

        return jax.lax.scan(one, (state, nodes), None, length=config.epochs)

    (state, _), energies = passes(state, nodes)
    return state, float(energies[-1])


def cues(config: Config, images: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (cue [N, n], mask [1, n])}``: the top halves, and noisy copies."""
    n = images.shape[-1]
    top = (np.arange(n) < n // 2).astype(np.float32)[None]  # rows 0-13 of 28
    noise = np.random.default_rng(config.seed + 1).normal(0.0, config.noise_stddev, images.shape)
    noisy = np.clip(images + noise, 0.0, 1.0).astype(np.float32)
    return {"half_masked": (images * top, top), "noisy": (noisy, np.ones_like(top))}


def retrieve(
    config: Config, state: fpc.PCTrainState, cue: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """The PC network's retrievals ``[N, n]`` in [0, 1], the cue clamped where ``mask`` is 1."""

    @jax.jit
    def run(params, cue, mask):
        prior_mean = jnp.zeros((len(cue), config.latent_size))
        nodes = fpc.init_nodes(state.apply_fn, params, prior_mean)
        inference = fpc.Inference(
            optax.sgd(config.retrieval_node_learning_rate), config.retrieval_steps
        )
        nodes, _ = fpc.infer(
            state.apply_fn, params, nodes, prior_mean, cue, inference=inference,
            output_energy=fpc.energies.masked(fpc.energies.squared_error, mask),
        )  # fmt: skip
        output = state.apply_fn({"params": params, fpc.NODES: nodes}, prior_mean)
        return jnp.clip(output, 0.0, 1.0)

    return np.asarray(run(state.params, cue, mask))


def hopfield_baselines(
    config: Config, images: np.ndarray, cue: np.ndarray, mask: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (retrieved, stored)}`` of the two Hopfield networks on ``cue``.

    The classical network stores the images binarised (pixel > 0.5: +1, else
    -1) and starts from the binarised cue, its unknown pixels -1 (background);
    its retrievals and stored images are in {0, 1}. The modern network stores
    the images as they are and sees the cue with its unknown pixels 0.
    """
    binary = np.where(images > 0.5, 1.0, -1.0).astype(np.float32)
    start = np.where((cue > 0.5) & (mask > 0), 1.0, -1.0).astype(np.float32)
    weights = jax.jit(models.storkey_weights)(binary)
    states = jax.jit(models.hopfield_retrieve, static_argnums=2)(
        weights, start, config.hopfield_sweeps
    )
    modern = models.modern_hopfield_retrieve(
        jnp.asarray(images), jnp.asarray(cue * mask), config.hopfield_beta
    )
    return {
        "storkey": ((np.asarray(states) + 1) / 2, (binary + 1) / 2),
        "modern_hopfield": (np.asarray(modern), images),
    }


def errors(retrieved: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """The mean squared error per pixel of each retrieval, ``[N]``."""
    return np.mean((np.asarray(retrieved, np.float64) - stored) ** 2, axis=-1)


def evaluate_memories(config: Config, images: np.ndarray, picture: pathlib.Path) -> dict[str, Any]:
    """Stores ``images`` ``[N, n]`` and retrieves them from each cue, by PC and both baselines."""
    start = time.time()
    state, energy = store(config, jnp.asarray(images))
    record: dict[str, Any] = {"memories": len(images), "train_energy": energy}
    rates: dict[str, dict[str, float]] = {"retrieval_rate": {}, "storkey_rate": {}}
    rates["modern_hopfield_rate"] = {}
    medians: dict[str, dict[str, float]] = {"pc": {}, "storkey": {}, "modern_hopfield": {}}
    shown = {}
    for name, (cue, mask) in cues(config, images).items():
        results = {"pc": (retrieve(config, state, cue, mask), images)}
        results.update(hopfield_baselines(config, images, cue, mask))
        for method, (retrieved, stored) in results.items():
            error = errors(retrieved, stored)
            key = "retrieval_rate" if method == "pc" else f"{method}_rate"
            rates[key][name] = float(np.mean(error < config.threshold))
            medians[method][name] = float(np.median(error))
        shown[name] = {"cue": np.where(mask > 0, cue, np.nan)}
        shown[name].update({method: retrieved for method, (retrieved, _) in results.items()})
    plots.plot_retrievals(picture, images, shown, columns=10)
    return {**record, **rates, "median_mse": medians, "seconds": time.time() - start}


def train_and_evaluate(config: Config, workdir: str) -> list[dict[str, Any]]:
    """Stores and retrieves each ``config.memories`` images; writes the metrics and pictures."""
    validate_config(config)
    splits = input_pipeline.load(
        config.dataset, data_dir=config.data_dir or None,
        synthetic_sizes=(config.synthetic_train_size, config.synthetic_test_size),
    )  # fmt: skip
    images = splits.train_images.reshape(len(splits.train_images), -1)
    if max(config.memories) > len(images):
        raise input_pipeline.DataError(
            f"config.memories asks for {max(config.memories)} images; the training set has "
            f"{len(images)}."
        )
    images = images[np.random.default_rng(config.seed).permutation(len(images))]
    folder = pathlib.Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.to_json(indent=2))
    records = []
    with open(folder / "metrics.jsonl", "w") as f:
        for n in config.memories:
            record = evaluate_memories(config, images[:n], folder / f"retrievals_{n}.png")
            logging.info("%d memories: %s", n, record)
            f.write(json.dumps(record) + "\n")
            f.flush()
            records.append(record)
    return records
