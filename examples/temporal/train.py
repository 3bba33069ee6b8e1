"""Temporal predictive coding: tracking a noisy system, and memorising sequences of digits.

Two tasks, one ``fpc.temporal`` recipe: a model whose latent at ``t`` is
predicted from the latent inferred at ``t-1`` (``models.py``); at each step
inference settles the latent with the observation clamped, and the latent is
the next step's input.

1. **Tracking**: a 2-D rotation observed through a noisy random projection.
   :func:`flax_pc.temporal.infer_sequence` filters it with the true matrices;
   :func:`flax_pc.temporal.train_sequence` learns them from another run; both
   are scored against a Kalman filter (``tpc_mse``, ``learned_tpc_mse``,
   ``kalman_mse``).
2. **Sequence memory**: a 2-layer tPC learns a sequence of 10 digits, then a
   30-frame sequence with repeats, from a fixed initial latent;
   :func:`flax_pc.temporal.predict_sequence` recalls every frame from that
   latent alone, and a classifier trained by backprop reads them
   (``recall_correct``).

The workdir gets ``metrics.jsonl`` (one line per task) and the pictures.
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
from examples.temporal import models, plots
from flax_pc import temporal

#: An ``ml_collections.ConfigDict`` of ``configs/tpc.py``'s fields (see validate_config).
Config = Any


def validate_config(config: Config) -> None:
    """Raises :class:`~examples.common.workdir.ConfigError` on the first bad field."""
    check = FieldChecker(config)
    check.data_fields(input_pipeline.DATASETS)
    check.check("angle", isinstance(config.angle, (int, float)), "a number (radians)")
    check.check(
        "damping", isinstance(config.damping, (int, float)) and 0 < config.damping <= 1,
        "a number in (0, 1]",
    )  # fmt: skip
    check.positive_float("process_noise", "observation_noise", "tracking_tolerance")
    check.check(
        "observation_size",
        isinstance(config.observation_size, int) and config.observation_size >= 2,
        "an int >= 2",
    )  # fmt: skip
    check.positive_int("train_length", "test_length", "tracking_inference_steps", "tracking_epochs")
    check.positive_float("tracking_node_learning_rate", "tracking_learning_rate")
    check.non_negative_float("tracking_weight_decay", "decoder_weight_decay")
    check.positive_int("hidden_size", "inference_steps", "sequence_epochs", "long_sequence_epochs")
    check.positive_float("node_learning_rate", "learning_rate", "classifier_learning_rate")
    check.check(
        "long_sequence_length",
        isinstance(config.long_sequence_length, int) and config.long_sequence_length > 0
        and config.long_sequence_length % 10 == 0,
        "an int > 0, a multiple of 10",
    )  # fmt: skip
    check.positive_int("classifier_epochs", "classifier_batch_size")
    check.non_negative_int("seed")


# --- 1. Tracking ----------------------------------------------------------------


def mse(estimates: np.ndarray, states: np.ndarray) -> float:
    """The mean over steps of the squared distance ``|estimate - state|^2``."""
    return float(np.mean(np.sum((np.asarray(estimates, np.float64) - states) ** 2, axis=-1)))


def filter_run(
    model: models.Tracker, params: Any, observations: np.ndarray, inference: fpc.Inference
) -> jax.Array:
    """tPC's estimates ``[T, 2]`` of one run's states, from ``z_0 = 0``."""
    result = temporal.infer_sequence(
        model.apply, params, jnp.zeros((1, model.latent_size)), observations[:, None],
        inference=inference,
    )  # fmt: skip
    return result.latents[:, 0]


def tracking(config: Config, workdir: pathlib.Path) -> dict[str, Any]:
    """Filters a test run with the true matrices and with learnt ones; the Kalman filter too."""
    system = {
        "angle": config.angle, "damping": config.damping, "process_noise": config.process_noise,
        "observation_noise": config.observation_noise,
        "observation_size": config.observation_size, "matrix_seed": config.seed,
    }  # fmt: skip
    train_run = models.rotation_system(length=config.train_length, seed=2 * config.seed, **system)
    test_run = models.rotation_system(length=config.test_length, seed=2 * config.seed + 1, **system)
    model = models.Tracker(
        latent_size=2, observation_size=config.observation_size,
        precision=config.observation_noise / config.process_noise,
    )  # fmt: skip
    inference = fpc.Inference(
        optax.sgd(config.tracking_node_learning_rate), config.tracking_inference_steps,
        tolerance=config.tracking_tolerance,
    )  # fmt: skip
    jitted = jax.jit(filter_run, static_argnums=(0, 3))

    def run(params: Any, observations: np.ndarray) -> np.ndarray:
        return np.asarray(jitted(model, params, observations, inference))

    known = run(models.tracker_params(test_run.A, test_run.C), test_run.observations)
    kalman = models.kalman_filter(
        test_run.A, test_run.C, test_run.observations, config.process_noise,
        config.observation_noise,
    )  # fmt: skip
    # Least squares on each observation alone: the estimate without the dynamics.
    least_squares = np.linalg.lstsq(test_run.C, test_run.observations.T, rcond=None)[0].T

    # Learning A and C: a weight step per time step along the training run.
    params = model.init(jax.random.key(config.seed), jnp.zeros((1, 2)))["params"]
    decay_c = {"A": {"kernel": False}, "C": {"kernel": True}}
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params, inference=inference,
        tx=optax.adamw(config.tracking_learning_rate, weight_decay=config.tracking_weight_decay,
                       mask=decay_c),
    )  # fmt: skip
    train = jax.jit(lambda s, ys: temporal.train_sequence(s, jnp.zeros((1, 2)), ys[:, None]))
    for epoch in range(config.tracking_epochs):
        state, result = train(state, train_run.observations)
        logging.info("tracking: pass %d, energy per step %.4f", epoch + 1,
                     float(result.energy.total.mean()))  # fmt: skip
    # The learnt latent has a basis of its own: map it to the state by least squares
    # fitted on the training run, then score the test run.
    basis = np.linalg.lstsq(
        run(state.params, train_run.observations), train_run.states, rcond=None
    )[0]
    learned = run(state.params, test_run.observations) @ basis

    estimates = {"tpc": known, "learned_tpc": learned, "kalman": kalman}
    plots.plot_tracking(workdir / "tracking.png", test_run.states, estimates, steps=100)
    record = {f"{name}_mse": mse(value, test_run.states) for name, value in estimates.items()}
    record["least_squares_mse"] = mse(least_squares, test_run.states)
    record["tpc_to_kalman"] = record["tpc_mse"] / record["kalman_mse"]
    record["learned_tpc_to_kalman"] = record["learned_tpc_mse"] / record["kalman_mse"]
    return {"task": "tracking", **record}


# --- 2. Sequence memory -----------------------------------------------------------


def train_classifier(config: Config, splits: input_pipeline.Splits) -> tuple[Any, float]:
    """An MLP trained by backprop on the training split; returns its params and test accuracy."""
    model, batch = models.Classifier(), config.classifier_batch_size
    images = jnp.asarray(splits.train_images.reshape(len(splits.train_images), -1))
    labels = jnp.asarray(splits.train_labels)
    params = model.init(jax.random.key(config.seed), images[:1])["params"]
    tx = optax.adam(config.classifier_learning_rate)

    @jax.jit
    def epoch(params, opt_state, key):
        order = jax.random.permutation(key, len(images))[: len(images) // batch * batch]

        def step(carry, indices):
            params, opt_state = carry

            def loss(params):
                logits = jnp.asarray(model.apply({"params": params}, images[indices]))
                return optax.softmax_cross_entropy_with_integer_labels(
                    logits, labels[indices]
                ).mean()

            updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order.reshape(-1, batch))
        return params, opt_state

    opt_state = tx.init(params)
    for e in range(config.classifier_epochs):
        params, opt_state = epoch(params, opt_state, jax.random.key(1000 + e))
    test = splits.test_images.reshape(len(splits.test_images), -1)
    accuracy = float(np.mean(classify(params, test) == splits.test_labels))
    return params, accuracy


def classify(params: Any, images: np.ndarray) -> np.ndarray:
    """The classifier's labels of ``images`` ``[N, 784]`` (clipped to [0, 1] first)."""
    logits = jnp.asarray(models.Classifier().apply({"params": params}, jnp.clip(images, 0.0, 1.0)))
    return np.asarray(jnp.argmax(logits, -1))


def memorise(config: Config, frames: np.ndarray, epochs: int) -> tuple[np.ndarray, float]:
    """Trains a :class:`~models.SequenceMemory` on ``frames`` ``[T, 784]``, then recalls them.

    The initial latent is fixed (a draw of N(0, I)); each pass runs
    ``temporal.train_sequence`` over the frames (a weight step per frame).
    Returns the recalled frames ``[T, 784]``, from the initial latent alone,
    and the mean energy per frame of the last pass.
    """
    model = models.SequenceMemory(config.hidden_size, frames.shape[-1])
    key_latent, key_params = jax.random.split(jax.random.key(config.seed))
    initial = jax.random.normal(key_latent, (1, config.hidden_size))
    params = model.init(key_params, initial)["params"]
    decoder_only = {"recurrent": {"kernel": False}, "decoder": {"kernel": True, "bias": True}}
    state = fpc.PCTrainState.create(
        apply_fn=model.apply, params=params,
        tx=optax.chain(
            optax.add_decayed_weights(config.decoder_weight_decay, mask=decoder_only),
            optax.sgd(config.learning_rate),
        ),
        inference=fpc.Inference(optax.sgd(config.node_learning_rate), config.inference_steps),
    )  # fmt: skip
    sequence = jnp.asarray(frames)[:, None]  # [T, B=1, 784]

    @jax.jit
    def passes(state):  # every pass of the training in one compiled loop
        def one(state, _):
            state, result = temporal.train_sequence(state, initial, sequence)
            return state, result.energy.total.mean()

        return jax.lax.scan(one, state, None, length=epochs)

    state, energies = passes(state)
    _, recalled = jax.jit(
        lambda p: temporal.predict_sequence(model.apply, p, initial, length=len(frames))
    )(state.params)
    return np.asarray(recalled[:, 0]), float(energies[-1])


def sequence_memory(
    config: Config, frames: np.ndarray, labels: np.ndarray, classifier: Any, epochs: int,
    picture: pathlib.Path,
) -> dict[str, Any]:  # fmt: skip
    """Memorises and recalls ``frames``; scores the recall per frame and by the classifier."""
    start = time.time()
    recalled, energy = memorise(config, frames, epochs)
    read = classify(classifier, recalled)
    plots.plot_recall(picture, frames, recalled, read == labels)
    return {
        "task": "sequence_memory",
        "frames": len(frames),
        "epochs": epochs,
        "recall_correct": float(np.mean(read == labels)),
        "stored_correct": float(np.mean(classify(classifier, frames) == labels)),
        "recall_mse": [round(float(e), 6) for e in np.mean((recalled - frames) ** 2, axis=-1)],
        "recall_labels": read.tolist(),
        "labels": labels.tolist(),
        "train_energy": energy,
        "seconds": time.time() - start,
    }


def choose_frames(config: Config, splits: input_pipeline.Splits) -> tuple[np.ndarray, np.ndarray]:
    """One training image of each digit 0..9, chosen at random: ``([10, 784], [10])``."""
    rng = np.random.default_rng(config.seed)
    images = splits.train_images.reshape(len(splits.train_images), -1)
    picks = [rng.choice(np.flatnonzero(splits.train_labels == d)) for d in range(10)]
    return images[picks], splits.train_labels[picks]


# --- The run -------------------------------------------------------------------------


def train_and_evaluate(config: Config, workdir: str) -> list[dict[str, Any]]:
    """Runs both tasks; writes ``metrics.jsonl`` and the pictures to ``workdir``."""
    validate_config(config)
    folder = pathlib.Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.to_json(indent=2))
    records = []

    start = time.time()
    records.append({**tracking(config, folder), "seconds": time.time() - start})
    logging.info("tracking: %s", records[-1])

    splits = input_pipeline.load(
        config.dataset, data_dir=config.data_dir or None,
        synthetic_sizes=(config.synthetic_train_size, config.synthetic_test_size),
    )  # fmt: skip
    classifier, accuracy = train_classifier(config, splits)
    logging.info("classifier: test accuracy %.4f", accuracy)
    frames, labels = choose_frames(config, splits)
    records.append({
        **sequence_memory(config, frames, labels, classifier, config.sequence_epochs,
                          folder / "recall.png"),
        "classifier_test_accuracy": accuracy,
    })  # fmt: skip
    logging.info("sequence memory: %s", records[-1])

    # The same 10 images, each repeated, in a new order every 10 frames: an image's
    # successor depends on where it is in the sequence, which only the latent knows.
    rng = np.random.default_rng(config.seed + 1)
    order = np.concatenate([rng.permutation(10) for _ in range(config.long_sequence_length // 10)])
    records.append({
        **sequence_memory(config, frames[order], labels[order], classifier,
                          config.long_sequence_epochs, folder / "recall_long.png"),
        "classifier_test_accuracy": accuracy,
    })  # fmt: skip
    logging.info("long sequence memory: %s", records[-1])

    with open(folder / "metrics.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return records
