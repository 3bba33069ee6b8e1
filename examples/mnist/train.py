"""Trains a predictive-coding network on MNIST and evaluates it after every epoch.

:class:`flax_pc.PCTrainState` trains the model (``models.py``): per batch, ``T``
inference steps on its value nodes with the image and label clamped, then one
weight step. An epoch is one jitted :func:`flax_pc.train_epoch` on device-resident
data, then a jitted evaluation of the feed-forward network. The workdir
(``examples/common/workdir.py``) gets config.json, metrics.jsonl, TensorBoard
summaries, a checkpoint per epoch and curves.png; a rerun resumes.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import input_pipeline
from examples.common import workdir as workdir_lib
from examples.common.workdir import FieldChecker
from examples.mnist import models
from examples.mnist.models import ACTIVATIONS

Config = ml_collections.ConfigDict
OUTPUT_ENERGIES = {name: getattr(fpc.energies, name) for name in ("squared_error", "cross_entropy")}


def shared(c: Config) -> dict[str, Any]:
    """What every model with its own nodes takes: the activation, value node and dropout."""
    return {"act": ACTIVATIONS[c.activation], "node": pc_node(c), "dropout_rate": c.dropout_rate}


def pc_node(c: Config) -> functools.partial:
    """``fpc.PCNode`` with the config's node fields (the library's names)."""
    fields = ("value_init", "value_init_stddev", "latent")
    return functools.partial(fpc.PCNode, **{name: c[name] for name in fields})


def module(name: str) -> Any:
    """``examples.mnist.<name>``, imported when a config first asks for one of its models."""
    return importlib.import_module(f"examples.mnist.{name}")


#: ``config.model``: the model it names, built from the config ``c``; each is used
#: as ``model.init(rngs, x, train=False)`` and ``model.apply(variables, x, train=...)``.
MODELS: dict[str, Callable[[Config], Any]] = {
    "mlp": lambda c: models.MLP(tuple(c.hidden_sizes), **shared(c)),
    "cnn": lambda c: models.CNN(tuple(c.conv_features), tuple(c.hidden_sizes), **shared(c)),
    "resnet": lambda c: module("models_deep").ResNet(
        c.resnet_stem_features,
        tuple(c.resnet_stage_features),
        c.resnet_blocks_per_stage,
        **shared(c),
    ),  # fmt: skip
    "residual_mlp": lambda c: module("models_deep").ResidualMLP(
        c.depth, c.width, mupc=c.parameterization == "mupc", **shared(c)
    ),
    "flax_cnn": lambda c: models.WithNodes(models.FlaxCNN(), pc_node(c)),
    "bpc": lambda c: module("models_bpc").BPC(
        tuple(c.hidden_sizes), c.backward_precision, **shared(c)
    ),
}


def create_model(config: Config) -> Any:
    """The model ``config.model`` names."""
    return MODELS[config.model](config)


def validate_config(config: Config) -> None:
    """Checks the fields only this example knows; raises :class:`ConfigError` on the first bad one.

    flax_pc checks its own (``algorithm``, ``inference_steps``, ``tolerance``,
    ``nudging``, ``value_init``, ``latent``) when the state is built.
    """
    check, model = FieldChecker(config), config.model
    check.data_fields(input_pipeline.DATASETS)
    check.one_of("flax_api", ("linen", "nnx"))  # 'nnx' runs in train_nnx.py (main.py)
    check.one_of("model", MODELS)
    check.sizes("hidden_sizes", required=model in ("mlp", "cnn", "bpc"))
    check.sizes("conv_features", required=model == "cnn")
    check.sizes("resnet_stage_features", required=model == "resnet")
    check.positive_int("resnet_stem_features", "resnet_blocks_per_stage", "width")
    check.check("depth", isinstance(config.depth, int) and config.depth >= 2, "an int >= 2")
    check.one_of("parameterization", ("standard", "mupc"))
    check.requires(
        "parameterization", config.parameterization == "standard" or model == "residual_mlp",
        f"applies to model 'residual_mlp' only (this config's model is {model!r}); keep 'standard'",
    )  # fmt: skip
    check.one_of("activation", ACTIVATIONS)
    check.fraction("dropout_rate", "node_momentum")
    check.requires(
        "dropout_rate", not config.dropout_rate or model != "flax_cnn",
        "with model 'flax_cnn': Flax's CNN as Flax writes it has no dropout; use 0",
    )  # fmt: skip
    check.path("init_checkpoint")
    check.one_of("output_energy", OUTPUT_ENERGIES)
    check.positive_float("node_learning_rate", "value_init_stddev", "learning_rate")
    check.one_of("optimizer", ("adam", "adamw"))
    check.one_of("lr_schedule", ("constant", "cosine"))
    check.non_negative_float("weight_decay", "backward_precision")
    check.requires(
        "weight_decay", not config.weight_decay or config.optimizer == "adamw",
        f"needs config.optimizer = 'adamw' (it is {config.optimizer!r})",
    )  # fmt: skip
    check.one_of("loop", ("auto", "epoch", "batch"))
    check.positive_int("batch_size", "eval_batch_size", "num_epochs", "checkpoints_to_keep")
    check.non_negative_int("seed")


def create_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The weight optimiser, with its learning-rate schedule."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":  # iPC takes a weight step at every inference step
        steps = config.num_epochs * steps_per_epoch
        steps *= config.inference_steps if config.algorithm == "ipc" else 1
        learning_rate = optax.cosine_decay_schedule(learning_rate, decay_steps=steps)
    if config.optimizer == "adamw":
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    return optax.adam(learning_rate)


def create_train_state(config: Config, rng: jax.Array, steps_per_epoch: int) -> fpc.PCTrainState:
    """A fresh :class:`flax_pc.PCTrainState`; ``rng`` draws the params (and nodes)."""
    model = create_model(config)
    params_rng, node_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_pipeline.IMAGE_SHAPE), jnp.float32)
    # One compiled init instead of hundreds of eager ops: seconds less at start-up.
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init({"params": params_rng, fpc.NOISE: node_rng}, dummy)
    # The params train; the other collections but the nodes (BatchNorm's
    # batch_stats) are the model state, updated by the feed-forward pass.
    model_state = {k: v for k, v in variables.items() if k not in ("params", fpc.NODES)}
    node_tx = optax.sgd(config.node_learning_rate, momentum=config.node_momentum or None)
    return fpc.PCTrainState.create(
        apply_fn=functools.partial(model.apply, train=True),
        params=variables["params"],
        model_state=model_state,
        tx=create_optimizer(config, steps_per_epoch),
        output_energy=OUTPUT_ENERGIES[config.output_energy],
        inference=fpc.Inference(node_tx, config.inference_steps, tolerance=config.tolerance),
        algorithm=config.algorithm,  # 'bp' ignores the inference
        nudging=config.nudging,
    )


@jax.jit
def summarize_epoch(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-batch metrics of an epoch as per-epoch means."""
    return {
        "train_energy": jnp.mean(metrics["energy"][:, -1]),
        "train_loss": jnp.mean(metrics["loss"]),
        "energy_per_step": jnp.mean(metrics["energy"], axis=0),
        "node_energies": jax.tree_util.tree_map(jnp.mean, metrics["node_energies"]),
        "energy_rose": jnp.mean(metrics["energy_rose"]),  # the fraction of batches
        "inference_steps": jnp.mean(metrics["inference_steps"]),
    }


@functools.partial(jax.jit, static_argnames=("predict", "batch_size"))
def evaluate(state, test_set, *, predict, batch_size) -> dict[str, Any]:
    """Feed-forward accuracy and mean output energy on the test set, ``batch_size`` at a time.

    ``predict`` is the model's evaluation mode: no dropout, BatchNorm's running averages.
    """
    images, labels = test_set
    variables = {"params": state.params, **state.model_state}
    logits = jax.lax.map(lambda x: predict(variables, x[None])[0], images, batch_size=batch_size)
    loss = state.output_energy(jax.nn.one_hot(labels, logits.shape[-1]), logits)
    return {"test_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels), "test_loss": loss.mean()}


def make_train_epoch(loop: str, batch_size: int, batch_sharding: Any = None) -> Any:
    """``train_epoch(state, inputs, targets, rng) -> (state, metrics)``, jitted, state donated.

    ``loop='epoch'``: :func:`flax_pc.train_epoch`, one XLA call; ``'batch'`` (a
    conv net on CPU): a loop over one jitted step (``examples/common/batch_loop.py``).
    """
    if loop == "batch":
        from examples.common import batch_loop

        return batch_loop.make_train_epoch(batch_size, batch_sharding)
    statics = ("batch_size", "batch_sharding")
    epoch = jax.jit(fpc.train_epoch, static_argnames=statics, donate_argnames="state")
    return functools.partial(epoch, batch_size=batch_size, batch_sharding=batch_sharding)


def resolve_loop(config: Config) -> str:
    """``config.loop`` with ``'auto'`` decided: ``'batch'`` for a conv net on CPU."""
    conv = config.model in ("cnn", "resnet", "flax_cnn") and jax.default_backend() == "cpu"
    return config.loop if config.loop != "auto" else ("batch" if conv else "epoch")


#: The panels of curves.png (besides the energy during inference): the record keys drawn.
CURVES = {"Loss (output energy)": ("train_loss", "test_loss"), "Test accuracy": ("test_accuracy",)}


def log_line(r: dict[str, Any]) -> str:
    return (
        f"train energy {r['train_energy']:.4f}, train loss {r['train_loss']:.4f}, test accuracy "
        f"{100 * r['test_accuracy']:.2f}%, test loss {r['test_loss']:.4f} ({r['seconds']:.2f} s, "
        f"{r['examples_per_second']:,.0f} examples/s)"
    )


def train_and_evaluate(config: Config, workdir: str) -> fpc.PCTrainState:
    """Trains ``config``'s model to ``config.num_epochs``, resuming ``workdir``'s run if any.

    Bad input (a config field, the data, the workdir) raises a
    :class:`~examples.common.workdir.UserError` before anything in ``workdir`` changes.
    """
    validate_config(config)
    FieldChecker(config).requires("flax_api", config.flax_api == "linen", "runs in train_nnx.py")
    with workdir_lib.Workdir(workdir, config) as run:
        parallel = fpc.DataParallel.create()
        splits, num_train = input_pipeline.load_splits(config, parallel.num_devices)
        init_rng, data_rng = jax.random.split(jax.random.key(config.seed))
        steps_per_epoch = num_train // config.batch_size
        with workdir_lib.config_errors():  # flax_pc checks its own arguments here
            state = parallel.replicate(create_train_state(config, init_rng, steps_per_epoch))
        loop = resolve_loop(config)
        params = jax.tree_util.tree_leaves(state.params)
        logging.info(
            f"{config.dataset}: {num_train} training and {len(splits.test_images)} test images. "
            f"Model {config.model!r} ({sum(p.size for p in params):,} params), algorithm "
            f"{config.algorithm!r}, {config.inference_steps} inference steps, loop {loop!r}, on "
            f"{workdir_lib.describe_devices(parallel.num_devices)}."
        )
        # Each process puts its share of the training set on its devices.
        one_hot = np.eye(input_pipeline.NUM_CLASSES, dtype=np.float32)[splits.train_labels]
        images = splits.train_images
        if config.model == "bpc":  # bPC's input holds the label too
            images = module("models_bpc").with_labels(images, one_hot)
        train_set = (images[:num_train], one_hot[:num_train])
        train_images, train_targets = parallel.shard(input_pipeline.process_share(train_set))
        test_set = parallel.replicate((splits.test_images, splits.test_labels))
        train_epoch = make_train_epoch(loop, config.batch_size, parallel.batch_sharding)
        predict = functools.partial(create_model(config).apply, train=False)
        evaluate_state = functools.partial(
            evaluate, test_set=test_set, predict=predict, batch_size=config.eval_batch_size
        )
        state = run.resume(state, weights=("params", "model_state"), evaluate=evaluate_state)

        def run_epoch(state, epoch):
            rng = jax.random.fold_in(data_rng, epoch)
            state, metrics = train_epoch(state, train_images, train_targets, rng)
            return state, {**summarize_epoch(metrics), **evaluate_state(state)}

        rates = ["node_learning_rate"] * (config.algorithm != "bp") + ["learning_rate"]
        examples = steps_per_epoch * config.batch_size
        state = run.train(
            state, run_epoch, log_line=log_line, learning_rates=rates, examples_per_epoch=examples
        )

        if run.history:  # process 0, after training or in a finished workdir
            accuracy = run.history[-1]["test_accuracy"]
            title = f"{config.model.upper()} on {config.dataset}, algorithm {config.algorithm!r}"
            workdir_lib.plot_curves(run.history, run.path / "curves.png", CURVES, title)
            if config.model == "bpc":  # bPC generates too: an image per clamped label
                module("generate").save_samples(config, create_model(config), state, run.path)
        else:
            accuracy = workdir_lib.to_host(evaluate_state(state))["test_accuracy"]
        epochs = max(config.num_epochs, run.start_epoch)
        logging.info("Final test accuracy: %.2f%% after %d epochs.", 100 * accuracy, epochs)
    return state
