"""Trains a predictive-coding network on MNIST and evaluates it after every epoch.

The whole data set lives on the device; each epoch is one jitted call of
:func:`flax_pc.train_epoch` (a ``lax.scan`` over the batches; or, for conv
nets on CPU, a Python loop over one jitted per-batch step, see
``config.loop``) followed by one jitted evaluation on the full test set, and
one host sync for the metrics.
The workdir gets ``config.json``, ``metrics.jsonl``, TensorBoard summaries,
an orbax checkpoint per epoch and ``curves.png``; rerunning with the same
workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import functools
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

import flax_pc as fpc
from examples.common import cli, config_checks, devices, input_pipeline, loop, records
from examples.common.activations import ACTIVATIONS
from examples.common.config_checks import ConfigError, is_int, is_number
from examples.mnist import models, plots

MODELS = ("mlp", "cnn", "resnet", "residual_mlp", "flax_cnn")
PARAMETERIZATIONS = ("standard", "mupc")
#: Models with convolutions: ``loop='auto'`` trains them batch by batch on CPU.
CONV_MODELS = ("cnn", "resnet", "flax_cnn")
OUTPUT_ENERGIES = {
    "squared_error": fpc.energies.squared_error,
    "cross_entropy": fpc.energies.cross_entropy,
}
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
NODE_INITS = ("forward", "zeros", "normal")
LOOPS = ("auto", "epoch", "batch")


#: Errors the user fixes; ``main.py`` turns them into a one-line message.
USER_ERRORS = cli.USER_ERRORS


# --- Config ------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every field of ``config``; raises :class:`ConfigError` on the first bad one."""

    checker = config_checks.FieldChecker(config)

    checker.data_fields(input_pipeline.DATASETS)
    checker.one_of("model", MODELS)
    checker.sizes("hidden_sizes", required=config.model == "mlp")
    checker.sizes("conv_features", required=config.model == "cnn")
    checker.positive_int("resnet_stem_features")
    checker.sizes("resnet_stage_features", required=config.model == "resnet")
    checker.positive_int("resnet_blocks_per_stage")
    checker.fraction("dropout_rate")
    if config.model == "flax_cnn" and config.dropout_rate:
        raise ConfigError(
            f"config.dropout_rate = {config.dropout_rate!r}: model 'flax_cnn' is Flax's CNN as "
            "Flax writes it, without dropout; use 0."
        )
    checker.check("depth", is_int(config.depth) and config.depth >= 2, "an int >= 2")
    checker.positive_int("width")
    checker.one_of("parameterization", PARAMETERIZATIONS)
    checker.one_of("node_latent", ("value", "error"))
    if config.model != "residual_mlp" and config.parameterization != "standard":
        raise ConfigError(
            f"config.parameterization = {config.parameterization!r} applies to model "
            f"'residual_mlp' only (this config's model is {config.model!r}); keep 'standard'."
        )
    checker.check(
        "init_checkpoint",
        config.init_checkpoint is None or isinstance(config.init_checkpoint, str),
        "None or the workdir of a run of the same model",
    )
    checker.one_of("activation", ACTIVATIONS)
    checker.one_of("algorithm", ("pc", "ipc", "bp"))
    checker.one_of("output_energy", OUTPUT_ENERGIES)
    checker.positive_int("inference_steps")
    tolerance = config.inference_tolerance
    checker.check(
        "inference_tolerance",
        tolerance is None or (is_number(tolerance) and math.isfinite(tolerance) and tolerance > 0),
        "None or a number > 0",
    )
    if tolerance is not None and config.algorithm != "pc":
        raise ConfigError(
            f"config.inference_tolerance = {tolerance!r} applies to algorithm 'pc' (iPC takes a "
            f"weight step at every inference step; bp has none), not {config.algorithm!r}."
        )
    checker.positive_float("node_learning_rate")
    checker.fraction("node_momentum")
    checker.one_of("node_init", NODE_INITS)
    checker.positive_float("node_init_stddev")
    nudging = config.nudging
    checker.check(
        "nudging",
        nudging is None or (is_number(nudging) and math.isfinite(nudging) and nudging != 0),
        "None or a number != 0 (beta)",
    )
    if nudging is not None and config.algorithm == "bp":
        raise ConfigError("config.nudging applies to algorithm 'pc' or 'ipc', not 'bp'.")
    checker.one_of("optimizer", OPTIMIZERS)
    checker.positive_float("learning_rate")
    checker.one_of("lr_schedule", LR_SCHEDULES)
    checker.non_negative_float("weight_decay")
    decay = config.weight_decay
    if decay > 0 and config.optimizer != "adamw":
        raise ConfigError(
            f"config.weight_decay = {decay!r} needs config.optimizer = 'adamw' "
            f"(it is {config.optimizer!r})."
        )
    checker.one_of("loop", LOOPS)
    checker.positive_int("batch_size")
    checker.positive_int("eval_batch_size")
    checker.positive_int("num_epochs")
    checker.non_negative_int("seed")
    checker.positive_int("checkpoints_to_keep")


# --- Model and train state ---------------------------------------------------


def create_model(
    config: ml_collections.ConfigDict,
) -> models.MLP | models.CNN | models.ResNet | models.ResidualMLP | models.FlaxCNN:
    """The linen model that ``config.model`` names."""
    if config.model == "flax_cnn":
        return models.FlaxCNN()
    common = {name: config[name] for name in models.SHARED_FIELDS if name != "num_classes"}
    common["num_classes"] = input_pipeline.NUM_CLASSES
    if config.model == "residual_mlp":
        return models.ResidualMLP(
            depth=config.depth,
            width=config.width,
            parameterization=config.parameterization,
            **common,
        )
    if config.model == "resnet":
        return models.ResNet(
            stem_features=config.resnet_stem_features,
            stage_features=tuple(config.resnet_stage_features),
            blocks_per_stage=config.resnet_blocks_per_stage,
            **common,
        )
    hidden_sizes = tuple(config.hidden_sizes)
    if config.model == "cnn":
        return models.CNN(
            conv_features=tuple(config.conv_features), hidden_sizes=hidden_sizes, **common
        )
    return models.MLP(hidden_sizes=hidden_sizes, **common)


def resolve_loop(config: ml_collections.ConfigDict) -> str:
    """``'epoch'`` or ``'batch'``: ``config.loop``, with ``'auto'`` decided.

    ``'auto'`` trains the conv models batch by batch on CPU, where XLA computes
    a convolution's gradients far slower inside a ``lax.scan`` than outside
    it (jax-ml/jax#12868), and everything else one ``lax.scan`` per epoch.
    """
    if config.loop != "auto":
        return config.loop
    on_cpu = jax.default_backend() == "cpu"
    return "batch" if config.model in CONV_MODELS and on_cpu else "epoch"


def model_apply(model: nn.Module, *, train: bool) -> Callable[..., Any]:
    """``model.apply`` in training or evaluation mode (Flax's CNN has no ``train``)."""
    if isinstance(model, models.FlaxCNN):
        return model.apply
    return functools.partial(model.apply, train=train)


def training_apply(model: nn.Module, config: ml_collections.ConfigDict) -> Callable[..., Any]:
    """The ``apply_fn`` PC trains: the model's own nodes, or ``with_nodes``' for Flax's CNN."""
    if isinstance(model, models.FlaxCNN):
        return fpc.with_nodes(
            model.apply,
            layers=(nn.Dense, nn.Conv),
            value_init=config.node_init,
            value_init_stddev=config.node_init_stddev,
            latent=config.node_latent,
        )
    return model_apply(model, train=True)


def create_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """The weight optimiser, with its learning-rate schedule."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        # iPC updates the weights at every inference step.
        per_batch = config.inference_steps if config.algorithm == "ipc" else 1
        learning_rate = optax.cosine_decay_schedule(
            config.learning_rate, decay_steps=config.num_epochs * steps_per_epoch * per_batch
        )
    if config.optimizer == "adamw":
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    return optax.adam(learning_rate)


def create_train_state(
    config: ml_collections.ConfigDict, rng: jax.Array, steps_per_epoch: int
) -> fpc.PCTrainState:
    """A fresh :class:`flax_pc.PCTrainState` for ``config``.

    Args:
      config: the hyperparameters.
      rng: the key for the initial params (and nodes with ``node_init='normal'``).
      steps_per_epoch: weight updates per epoch (for the learning-rate schedule).
    """
    model = create_model(config)
    params_rng, node_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_pipeline.IMAGE_SHAPE), jnp.float32)
    # One compiled init instead of hundreds of eager ops: seconds less at start-up.
    mode = {} if isinstance(model, models.FlaxCNN) else {"train": False}
    init = jax.jit(lambda rngs: model.init(rngs, dummy, **mode))
    variables = init({"params": params_rng, fpc.NODE_RNG: node_rng})
    # The params train; the other collections but flax_pc's (BatchNorm's
    # batch_stats) are the model state, updated by the feed-forward pass.
    model_state = {
        name: collection
        for name, collection in variables.items()
        if name not in ("params", fpc.NODES, fpc.ENERGIES)
    }
    momentum = config.node_momentum or None
    inference = {
        "node_tx": optax.sgd(config.node_learning_rate, momentum=momentum),
        "tolerance": config.inference_tolerance,
        "inference_steps": config.inference_steps,
        "nudging": config.nudging,
    }
    return fpc.PCTrainState.create(
        apply_fn=training_apply(model, config),
        params=variables["params"],
        model_state=model_state,
        tx=create_optimizer(config, steps_per_epoch),
        output_energy=OUTPUT_ENERGIES[config.output_energy],
        algorithm=config.algorithm,
        **(inference if config.algorithm != "bp" else {}),  # backprop has no inference
    )


# --- Evaluation --------------------------------------------------------------


def _pad_test_set(images: np.ndarray, labels: np.ndarray, eval_batch_size: int):
    """Pads the test set to whole chunks of ``eval_batch_size``; returns a mask too."""
    n = len(images)
    chunk = min(eval_batch_size, n)
    padded = -(-n // chunk) * chunk
    pad = padded - n
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.arange(padded) < n
    return (
        images.reshape(-1, chunk, *images.shape[1:]),
        labels.reshape(-1, chunk),
        mask.reshape(-1, chunk),
    )


def eval_variables(state: fpc.PCTrainState) -> dict[str, Any]:
    """The variables of the evaluation mode: the params and the model state."""
    return {"params": state.params, **state.model_state}


@functools.partial(jax.jit, static_argnames=("apply_fn", "output_energy"))
def evaluate(variables, images, labels, mask, *, apply_fn, output_energy):
    """Feed-forward accuracy and mean output energy on a chunked test set.

    ``apply_fn`` is the model's evaluation mode (``model_apply(model,
    train=False)``): no dropout, and BatchNorm with its running averages.
    """

    def chunk(batch):
        x, y, m = batch
        logits = apply_fn(variables, x)
        targets = jax.nn.one_hot(y, logits.shape[-1])
        correct = jnp.sum((jnp.argmax(logits, -1) == y) * m)
        return correct, jnp.sum(output_energy(targets, logits) * m)

    correct, loss = jax.lax.map(chunk, (images, labels, mask))
    n = jnp.sum(mask)
    return {"test_accuracy": jnp.sum(correct) / n, "test_loss": jnp.sum(loss) / n}


def batch_loop_epoch(step, state, inputs, targets, rng, *, batch_size):
    """``fpc.train_epoch`` as a Python loop over a jitted per-batch ``step``.

    The same batches and keys (so the same result up to float rounding) and
    the same stacked metrics; the data stays on the device and each batch is
    gathered inside ``step``. For conv nets on CPU: XLA computes convolution
    gradients inside a ``lax.scan`` on a slow path (jax-ml/jax#12868).

    Args:
      step: ``step(state, inputs, targets, indices, keys, i) -> (state, metrics)``,
        jitted (see :func:`make_batch_step`).
      state, inputs, targets, rng, batch_size: as for ``fpc.train_epoch``.
    """
    indices, keys = _epoch_batches(rng, inputs.shape[0], batch_size)
    metrics = []
    for i in range(indices.shape[0]):
        state, batch_metrics = step(state, inputs, targets, indices, keys, i)
        metrics.append(batch_metrics)
    return state, _stack(metrics)


_epoch_batches = jax.jit(fpc.epoch_batches, static_argnums=(1, 2))


def _stack(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return jax.tree_util.tree_map(lambda *m: jnp.stack(m), *metrics)


def make_batch_step(batch_sharding: jax.sharding.Sharding | None = None):
    """The jitted step of :func:`batch_loop_epoch`: gathers batch ``i``, trains on it.

    Args:
      batch_sharding: where the gathered batch lives (split over the devices).
    """

    def step(state, inputs, targets, indices, keys, i):
        batch = (inputs[indices[i]], targets[indices[i]])
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return state.train_step(*batch, rng=keys[i])

    return jax.jit(step, donate_argnames=("state",))


@jax.jit
def summarize_epoch(metrics):
    """Reduces the per-batch metrics of an epoch to per-epoch means."""
    return {
        "train_energy": jnp.mean(metrics["energy"][:, -1]),
        "train_loss": jnp.mean(metrics["loss"]),
        "energy_per_step": jnp.mean(metrics["energy"], axis=0),
        "node_energies": jax.tree_util.tree_map(jnp.mean, metrics["node_energies"]),
        "inference_steps": jnp.mean(metrics["inference_steps"]),
    }


# --- The loop ----------------------------------------------------------------


def _format_epoch(record: dict[str, Any]) -> str:
    return (
        f"train energy {record['train_energy']:.4f}, train loss {record['train_loss']:.4f}, test "
        f"accuracy {100 * record['test_accuracy']:.2f}%, test loss {record['test_loss']:.4f} "
        f"({record['seconds']:.2f} s, {record['examples_per_second']:,.0f} examples/s)"
    )


def _progress_fields(record: dict[str, Any]) -> dict[str, str]:
    return {
        "energy": f"{record['train_energy']:.3f}",
        "test_acc": f"{100 * record['test_accuracy']:.2f}%",
    }


def _check_finite(record: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    if config.algorithm == "bp":
        advice = f"lower config.learning_rate (now {config.learning_rate})"
    else:
        advice = (
            f"lower config.node_learning_rate (now {config.node_learning_rate}) or "
            f"config.learning_rate (now {config.learning_rate})"
        )
    loop.check_finite(
        record, {"train_loss": "train loss", "test_loss": "test loss"}, "training", advice
    )


def _describe(config: ml_collections.ConfigDict, params: Any, loop: str) -> str:
    if config.model == "flax_cnn":
        layers = "conv 32-64, dense 256-10 (Flax's MNIST CNN; value nodes by fpc.with_nodes)"
    elif config.model == "resnet":
        layers = (
            f"stem {config.resnet_stem_features}, stages "
            f"{'-'.join(map(str, config.resnet_stage_features))} x "
            f"{config.resnet_blocks_per_stage} blocks"
        )
    elif config.model == "cnn":
        layers = f"conv {'-'.join(map(str, config.conv_features))}, dense " + "-".join(
            map(str, (*config.hidden_sizes, input_pipeline.NUM_CLASSES))
        )
    else:
        layers = "-".join(map(str, (784, *config.hidden_sizes, input_pipeline.NUM_CLASSES)))
    num_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    return (
        f"{config.model.upper()} {layers} ({num_params:,} params), algorithm "
        f"{config.algorithm!r}, {config.inference_steps} inference steps, "
        f"{'one lax.scan per epoch' if loop == 'epoch' else 'a jitted step per batch'} "
        f"(loop {loop!r})"
    )


def _epoch_record(
    epoch: int, summary: dict[str, Any], seconds: float, examples: int
) -> dict[str, Any]:
    """One line of ``metrics.jsonl``, from the host copy of the epoch's metrics."""
    return {
        "epoch": epoch,
        "train_energy": float(summary["train_energy"]),
        "train_loss": float(summary["train_loss"]),
        "test_accuracy": float(summary["test_accuracy"]),
        "test_loss": float(summary["test_loss"]),
        "seconds": seconds,
        "examples_per_second": examples / seconds,
        "energy_per_step": [float(e) for e in summary["energy_per_step"]],
        "node_energies": {k: float(v) for k, v in summary["node_energies"].items()},
        "inference_steps": float(summary["inference_steps"]),
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> fpc.PCTrainState:
    """Trains ``config``'s model for ``config.num_epochs``, evaluating after each epoch.

    Resumes from the latest checkpoint in ``workdir`` if there is one.

    Args:
      config: the hyperparameters (see ``configs/default.py``).
      workdir: where checkpoints, metrics, summaries and plots go.

    Returns:
      The final train state.

    Raises:
      ConfigError, records.WorkdirError, input_pipeline.DataError: before anything in
        ``workdir`` is changed.
      DivergedError: the energy became NaN or infinite (the checkpoint of the
        last good epoch is kept).
    """
    return loop.in_workdir(config, workdir, validate_config, _train_and_evaluate)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir_path: pathlib.Path
) -> fpc.PCTrainState:
    """:func:`train_and_evaluate` in the workdir it holds."""
    records.check_workdir(config, workdir_path)
    if config.init_checkpoint:
        records.check_init_checkpoint(config, pathlib.Path(config.init_checkpoint))

    parallel = fpc.DataParallel.create()
    splits, num_train = devices.load_splits(config, parallel.num_devices)
    logging.info(
        "%s: %d training and %d test images (%s).",
        config.dataset,
        num_train,
        len(splits.test_images),
        config.data_dir or ("synthetic" if config.dataset == "synthetic" else "TFDS"),
    )

    init_rng, data_rng = jax.random.split(jax.random.key(config.seed))
    steps_per_epoch = num_train // config.batch_size
    state = parallel.replicate(create_train_state(config, init_rng, steps_per_epoch))
    loop_kind = resolve_loop(config)
    logging.info(
        "%s, on %s.",
        _describe(config, state.params, loop_kind),
        devices.describe(parallel.num_devices),
    )

    resumed = records.resume(
        workdir_path, config, state, num_epochs=config.num_epochs, primary=devices.is_primary()
    )
    state, start_epoch, history = resumed.state, resumed.start_epoch, resumed.history

    # Each process puts its share of the training set on its devices.
    train_labels = np.eye(input_pipeline.NUM_CLASSES, dtype=np.float32)[splits.train_labels]
    train_images, train_targets = parallel.shard(
        (
            devices.process_share(splits.train_images[:num_train]),
            devices.process_share(train_labels[:num_train]),
        )
    )
    test_set = parallel.replicate(
        _pad_test_set(splits.test_images, splits.test_labels, config.eval_batch_size)
    )
    if loop_kind == "batch":
        train_epoch = functools.partial(
            batch_loop_epoch, make_batch_step(parallel.batch_sharding), batch_size=config.batch_size
        )
    else:
        train_epoch = loop.jit_train_epoch(config.batch_size, parallel.batch_sharding)
    eval_fn = functools.partial(
        evaluate,
        apply_fn=model_apply(create_model(config), train=False),
        output_energy=state.output_energy,
    )
    examples_per_epoch = steps_per_epoch * config.batch_size
    if config.init_checkpoint and not start_epoch:
        state, epoch = records.load_trained(pathlib.Path(config.init_checkpoint), state)
        before = devices.to_host(eval_fn(eval_variables(state), *test_set))
        logging.info(
            "Starting from the weights of %s (epoch %d): test accuracy %.2f%% before training.",
            config.init_checkpoint,
            epoch,
            100 * float(before["test_accuracy"]),
        )

    def run_epoch(state, epoch):
        start = time.perf_counter()
        state, train_metrics = train_epoch(
            state, train_images, train_targets, jax.random.fold_in(data_rng, epoch)
        )
        summary = devices.to_host(
            {**summarize_epoch(train_metrics), **eval_fn(eval_variables(state), *test_set)}
        )
        return state, _epoch_record(epoch, summary, time.perf_counter() - start, examples_per_epoch)

    state = loop.train_epochs(
        resumed._replace(state=state),
        run_epoch,
        log_line=_format_epoch,
        progress_fields=_progress_fields,
        check=lambda record: _check_finite(record, config),
    )

    if not history:  # Nothing trained, or not process 0: evaluate the final state.
        final = devices.to_host(eval_fn(eval_variables(state), *test_set))
        accuracy = float(final["test_accuracy"])
    else:
        accuracy = history[-1]["test_accuracy"]
        plots.plot_curves(
            history,
            workdir_path / "curves.png",
            title=f"{config.model.upper()} on {config.dataset}, algorithm {config.algorithm!r}",
        )
    logging.info(
        "Final test accuracy: %.2f%% after %d epochs.",
        100 * accuracy,
        max(config.num_epochs, start_epoch),
    )
    return state
