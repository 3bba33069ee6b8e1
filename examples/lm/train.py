"""Trains a character-level Transformer by predictive coding and evaluates its perplexity.

The model (``models.py``) has no ``PCNode``: :func:`flax_pc.with_nodes` puts a
value node on every activation that its Dense layers (attention projections
included) read, and :class:`flax_pc.PCTrainState` trains it with the
next-character one-hot targets clamped to the logits by
:func:`flax_pc.energies.cross_entropy` (times ``config.output_precision``):
per batch, ``T`` inference steps on the nodes' values or errors
(``config.latent``), then one Adam step on the weights (``algorithm='bp'``:
backprop on the same model). An epoch is one jitted :func:`flax_pc.train_epoch` over the
training windows, as in examples/mnist; the evaluation runs the plain model
over the whole validation and test text. After training, a sample from
``config.sample_prompt`` goes to ``workdir/sample.txt`` and the log. The
workdir (``examples/common/workdir.py``) gets config.json, metrics.jsonl,
TensorBoard summaries, a checkpoint per epoch and curves.png; a rerun resumes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import workdir as workdir_lib
from examples.common.workdir import ConfigError, FieldChecker
from examples.lm import input_pipeline, models, sampling, text
from examples.lm.text import Vocabulary
from examples.mnist.train import make_train_epoch, summarize_epoch

Config = ml_collections.ConfigDict
#: The splits evaluated after every epoch (the record keys' prefixes).
EVAL_SPLITS = ("validation", "test")


def validate_config(config: Config) -> None:
    """Checks the fields only this example knows; raises :class:`ConfigError` on the first bad one.

    flax_pc checks its own (``algorithm``, ``inference_steps``, ``value_init``,
    ``latent``, ``nudging``) when the state is built.
    """
    check = FieldChecker(config)
    check.path("data_dir")
    check.positive_int("num_layers", "width", "num_heads", "mlp_dim", "context_length")
    check.requires(
        "width", config.width % config.num_heads == 0,
        f"must be a multiple of config.num_heads = {config.num_heads}",
    )  # fmt: skip
    check.positive_float(
        "node_learning_rate", "output_precision", "learning_rate", "sample_temperature"
    )
    check.positive_int("batch_size", "eval_batch_size", "num_epochs", "checkpoints_to_keep")
    check.non_negative_int("seed", "sample_length")
    check.check("sample_prompt", isinstance(config.sample_prompt, str), "a string")
    check.requires(
        "nudging", config.nudging is None or config.output_precision == 1,
        "nudges the output's probabilities, which the weighted cross-entropy of "
        f"config.output_precision = {config.output_precision} hides: leave one of them out",
    )  # fmt: skip


def split_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(init, data, sample)`` keys of a run: the initial params, the window order of
    each epoch (folded with the epoch), the sample's draws."""
    init_rng, data_rng, sample_rng = jax.random.split(jax.random.key(seed), 3)
    return init_rng, data_rng, sample_rng


def create_model(config: Config, vocab_size: int) -> models.CharTransformer:
    """The plain Transformer of ``config`` over ``vocab_size`` ids."""
    return models.CharTransformer(
        vocab_size=vocab_size,
        context_length=config.context_length,
        num_layers=config.num_layers,
        width=config.width,
        num_heads=config.num_heads,
        mlp_dim=config.mlp_dim,
    )


def output_energy(config: Config) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The output energy: cross-entropy times ``config.output_precision`` (at 1,
    :func:`flax_pc.energies.cross_entropy` itself, which nudging recognises)."""
    precision = config.output_precision
    if precision == 1:
        return fpc.energies.cross_entropy

    def weighted(targets: jax.Array, logits: jax.Array) -> jax.Array:
        return precision * fpc.energies.cross_entropy(targets, logits)

    return weighted


def create_train_state(config: Config, vocab_size: int, rng: jax.Array) -> fpc.PCTrainState:
    """A fresh :class:`flax_pc.PCTrainState` of the model with nodes; ``rng`` draws the params."""
    model = create_model(config, vocab_size)
    dummy = jnp.zeros((1, config.context_length), jnp.int32)
    params = jax.jit(model.init)(rng, dummy)["params"]  # one compile, not op by op
    precision = config.output_precision
    return fpc.PCTrainState.create(
        apply_fn=fpc.with_nodes(model.apply, value_init=config.value_init, latent=config.latent),
        params=params,
        # The weight gradient comes out times the precision: Adam's step, divided back.
        tx=optax.chain(optax.scale(1 / precision), optax.adam(config.learning_rate)),
        inference=fpc.Inference(optax.sgd(config.node_learning_rate), config.inference_steps),
        output_energy=output_energy(config),
        algorithm=config.algorithm,  # 'bp' ignores the inference
        nudging=config.nudging,
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size"))
def negative_log_likelihood(
    params: Any, windows: tuple[jax.Array, ...], *, apply_fn: Any, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """``(total NLL in nats, number of characters)`` of the plain model over ``windows``
    (``text.evaluation_windows``: inputs, targets, mask, each ``[M, L]``),
    ``batch_size`` windows at a time."""

    def window_nll(window):
        inputs, targets, mask = window
        logits = apply_fn({"params": params}, inputs[None])[0]
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], -1)[:, 0]
        return -jnp.sum(log_p * mask)

    nll = jax.lax.map(window_nll, windows, batch_size=batch_size)
    return jnp.sum(nll), jnp.sum(windows[2])


def perplexity_metrics(nll: float, count: float, prefix: str) -> dict[str, float]:
    """``<prefix>_loss`` (nats per character), ``<prefix>_perplexity`` (its exp) and
    ``<prefix>_bits_per_char``."""
    loss = float(nll) / float(count)
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": math.exp(loss),
        f"{prefix}_bits_per_char": loss / math.log(2),
    }


#: The panels of curves.png (besides the energy during inference): the record keys drawn.
CURVES = {
    "Loss (nats per character)": ("train_loss_per_char", "validation_loss", "test_loss"),
    "Test perplexity": ("test_perplexity",),
}


def log_line(r: dict[str, Any]) -> str:
    return (
        f"train energy {r['train_energy']:.4g}, train loss {r['train_loss_per_char']:.4f} "
        f"nats/char, test perplexity {r['test_perplexity']:.3f} ({r['test_bits_per_char']:.3f} "
        f"bits/char), validation perplexity {r['validation_perplexity']:.3f} "
        f"({r['seconds']:.2f} s, {r['characters_per_second']:,.0f} characters/s)"
    )


def load_data(config: Config) -> tuple[input_pipeline.Texts, Vocabulary]:
    """The three splits of the text and the training text's vocabulary; logs their sizes."""
    texts = input_pipeline.load_texts(config.data_dir or None)
    vocab = Vocabulary.build(*texts)
    unknown = {s: vocab.count_unknown(getattr(texts, s)) for s in EVAL_SPLITS}
    logging.info(
        f"Text: {len(texts.train):,} training, {len(texts.validation):,} validation and "
        f"{len(texts.test):,} test characters; vocabulary of {len(vocab.chars)} characters"
        + (f", unknown characters {unknown} (one extra id)." if vocab.unknown else ".")
    )
    return texts, vocab


def train_and_evaluate(config: Config, workdir: str) -> fpc.PCTrainState:
    """Trains ``config``'s model to ``config.num_epochs``, resuming ``workdir``'s run if any.

    Bad input (a config field, the data, the workdir) raises a
    :class:`~examples.common.workdir.UserError` before anything in ``workdir`` changes.
    """
    validate_config(config)
    with workdir_lib.Workdir(workdir, config) as run:
        texts, vocab = load_data(config)
        if set(config.sample_prompt) - set(vocab.chars):
            raise ConfigError(
                f"config.sample_prompt = {config.sample_prompt!r} has characters outside the "
                "training text's vocabulary."
            )
        if len(texts.train) <= config.context_length:
            raise ConfigError(
                f"config.context_length = {config.context_length} leaves no window in the "
                f"training text ({len(texts.train)} characters)."
            )
        inputs, targets = text.training_windows(vocab.encode(texts.train), config.context_length)
        if config.batch_size > len(inputs):
            raise ConfigError(
                f"config.batch_size = {config.batch_size} is larger than the training set "
                f"({len(inputs)} windows of {config.context_length} characters)."
            )
        init_rng, data_rng, sample_rng = split_keys(config.seed)
        with workdir_lib.config_errors():  # flax_pc checks its own arguments here
            state = create_train_state(config, vocab.size, init_rng)
        model = create_model(config, vocab.size)
        logging.info(
            f"Model: {config.num_layers} blocks of width {config.width}, "
            f"{sum(p.size for p in jax.tree_util.tree_leaves(state.params)):,} params; algorithm "
            f"{config.algorithm!r}, {config.inference_steps} inference steps; "
            f"{len(inputs):,} training windows of {config.context_length} characters."
        )
        train_inputs = jax.device_put(inputs)
        train_targets = jax.device_put(np.eye(vocab.size, dtype=np.float32)[targets])
        eval_sets = {
            split: jax.device_put(
                text.evaluation_windows(vocab.encode(getattr(texts, split)), config.context_length)
            )
            for split in EVAL_SPLITS
        }
        train_epoch = make_train_epoch("epoch", config.batch_size)

        def evaluate(state: fpc.PCTrainState) -> dict[str, float]:
            metrics = {}
            for split, windows in eval_sets.items():
                nll, count = negative_log_likelihood(
                    state.params, windows, apply_fn=model.apply, batch_size=config.eval_batch_size
                )
                metrics.update(perplexity_metrics(nll, count, split))
            return metrics

        state = run.resume(state, weights=("params",), evaluate=evaluate)
        characters = (len(inputs) // config.batch_size) * config.batch_size * config.context_length

        def run_epoch(state, epoch):
            start = time.perf_counter()
            state, metrics = train_epoch(state, train_inputs, train_targets,
                                         jax.random.fold_in(data_rng, epoch))  # fmt: skip
            summary = jax.block_until_ready(summarize_epoch(metrics))
            train_seconds = time.perf_counter() - start
            return state, {
                **summary,
                "train_loss_per_char": summary["train_loss"]
                / (config.context_length * config.output_precision),
                "characters_per_second": characters / train_seconds,
                **evaluate(state),
            }

        rates = ["node_learning_rate"] * (config.algorithm != "bp") + ["learning_rate"]
        state = run.train(state, run_epoch, log_line=log_line, learning_rates=rates)

        if run.history:  # process 0, after training or in a finished workdir
            title = f"Character Transformer, algorithm {config.algorithm!r}"
            workdir_lib.plot_curves(run.history, run.path / "curves.png", CURVES, title)
            sample = sampling.sample(
                model.apply, state.params, vocab, config.sample_prompt,
                num_chars=config.sample_length, temperature=config.sample_temperature,
                context=config.context_length, key=sample_rng,
            )  # fmt: skip
            (run.path / "sample.txt").write_text(sample)
            logging.info("Sample at temperature %s:\n%s", config.sample_temperature, sample)
            final = run.history[-1]
        else:
            final = evaluate(state)
        logging.info(
            "Final test perplexity: %.3f (%.3f bits/char) after %d epochs.",
            final["test_perplexity"], final["test_bits_per_char"],
            max(config.num_epochs, run.start_epoch),
        )  # fmt: skip
    return state
