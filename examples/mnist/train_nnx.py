"""Trains the MLP as a Flax NNX model (``config.flax_api = 'nnx'``, ``configs/nnx.py``).

The run of ``train.py`` with the model written in NNX (``models_nnx.py``):
the same data, config fields, weight optimiser, metrics and workdir
(config.json, metrics.jsonl, TensorBoard summaries, a checkpoint per epoch,
curves.png; a rerun resumes). Per batch, :func:`flax_pc.nnx.train_step` takes
the PC step of :class:`flax_pc.PCTrainState` on the NNX model, updating the
model and its ``nnx.Optimizer`` in place. An epoch is one jitted ``lax.scan``
over the batches on NNX's functional API (the state of ``nnx.split`` is
carried and merged into the model in each step), or with ``loop='batch'`` a
Python loop over the same step under ``nnx.jit``; then the feed-forward
network is evaluated in ``model.eval()`` mode.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

import flax_pc as fpc
from examples.common import input_pipeline
from examples.common import workdir as workdir_lib
from examples.common.workdir import FieldChecker
from examples.mnist import models_nnx, train
from examples.mnist.models import ACTIVATIONS

Config = train.Config


def validate_config(config: Config) -> None:
    """``train.validate_config``, then what the NNX path adds: it has the MLP only.

    ``fpc.nnx.PCNode`` checks its fields (``value_init``, ``latent``) when it is
    made, here; ``fpc.nnx.train_step`` its own when the step is first traced.
    """
    train.validate_config(config)
    FieldChecker(config).requires(
        "flax_api", config.model == "mlp",
        f"trains model 'mlp' only (this config's model is {config.model!r}); the other models "
        "are linen's: use flax_api='linen'",
    )  # fmt: skip
    with workdir_lib.config_errors():
        abstract_model(config)


def create_model(config: Config, rngs: nnx.Rngs) -> models_nnx.MLP:
    """The NNX MLP of ``config``; ``rngs`` draws its weights (``params``) and feeds its dropout."""
    node = functools.partial(
        fpc.nnx.PCNode,
        value_init=config.value_init,
        value_init_stddev=config.value_init_stddev,
        latent=config.latent,
    )
    return models_nnx.MLP(
        int(np.prod(input_pipeline.IMAGE_SHAPE)),
        tuple(config.hidden_sizes),
        input_pipeline.NUM_CLASSES,
        act=ACTIVATIONS[config.activation],
        node=node,
        dropout_rate=config.dropout_rate,
        rngs=rngs,
    )


def abstract_model(config: Config) -> models_nnx.MLP:
    """The model of ``config`` with its arrays as shapes (``nnx.eval_shape``: nothing computed)."""
    return nnx.eval_shape(lambda: create_model(config, nnx.Rngs(0)))


def create_model_and_optimizer(
    config: Config, rng: jax.Array, steps_per_epoch: int
) -> tuple[models_nnx.MLP, nnx.Optimizer]:
    """A fresh model, in training mode, and its ``nnx.Optimizer`` for the params."""
    params_rng, dropout_rng = jax.random.split(rng)
    model = create_model(config, nnx.Rngs(params=params_rng, dropout=dropout_rng))
    tx = train.create_optimizer(config, steps_per_epoch)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def step_arguments(config: Config) -> dict[str, Any]:
    """The config's arguments of :func:`flax_pc.nnx.train_step` (flax_pc checks them)."""
    node_tx = optax.sgd(config.node_learning_rate, momentum=config.node_momentum or None)
    return {
        "inference": fpc.Inference(node_tx, config.inference_steps, tolerance=config.tolerance),
        "output_energy": train.OUTPUT_ENERGIES[config.output_energy],
        "algorithm": config.algorithm,  # 'bp' ignores the inference
        "nudging": config.nudging,
    }


def make_train_epoch(config: Config, graphdef: nnx.GraphDef, loop: str, batch_sharding: Any):
    """``train_epoch(state, images, targets, rng) -> (state, metrics)`` over ``nnx.split``'s state.

    Both loops draw the batches and keys of ``fpc.train_epoch``
    (:func:`flax_pc.epoch_batches`), so they give the same result up to
    float rounding, and the metrics are stacked over the batches.
    """
    arguments = step_arguments(config)

    def train_step(model, optimizer, images, targets, indices, key):
        """One batch, the rows ``indices`` gathered on the device; updates model and optimizer."""
        batch = (images[indices], targets[indices])
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return fpc.nnx.train_step(model, optimizer, *batch, rngs=key, **arguments)

    def batches(images, rng):
        return fpc.epoch_batches(rng, images.shape[0], config.batch_size)

    if loop == "batch":
        jitted_step = nnx.jit(train_step)

        def batch_loop(state, images, targets, rng):
            objects = nnx.merge(graphdef, state)  # {'model': ..., 'optimizer': ...}
            # Without NNX's walk over the model and optimiser at every call.
            step = nnx.cached_partial(jitted_step, objects["model"], objects["optimizer"])
            indices, keys = batches(images, rng)
            metrics = [step(images, targets, i, key) for i, key in zip(indices, keys)]
            stacked = jax.tree_util.tree_map(lambda *m: jnp.stack(m), *metrics)
            return nnx.state(objects), stacked

        return batch_loop

    @functools.partial(jax.jit, donate_argnums=0)
    def scan_loop(state, images, targets, rng):
        def step(state, batch):
            objects = nnx.merge(graphdef, state)
            metrics = train_step(objects["model"], objects["optimizer"], images, targets, *batch)
            return nnx.state(objects), metrics

        return jax.lax.scan(step, state, batches(images, rng))

    return scan_loop


@functools.partial(jax.jit, static_argnames=("graphdef", "output_energy", "batch_size"))
def evaluate(state, test_set, *, graphdef, output_energy, batch_size) -> dict[str, Any]:
    """Feed-forward accuracy and mean output energy on the test set, ``batch_size`` at a time."""
    model = nnx.merge(graphdef, state)["model"]
    model.eval()  # no dropout
    images, labels = test_set
    logits = jax.lax.map(lambda x: model(x[None])[0], images, batch_size=batch_size)
    loss = output_energy(jax.nn.one_hot(labels, logits.shape[-1]), logits)
    return {"test_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels), "test_loss": loss.mean()}


def train_and_evaluate(config: Config, workdir: str) -> nnx.State:
    """Trains ``config``'s NNX model to ``config.num_epochs``, resuming ``workdir``'s run if any.

    Returns ``nnx.state({'model': model, 'optimizer': optimizer})``. Bad input raises
    as in ``train.py``, before anything in ``workdir`` changes.
    """
    validate_config(config)
    with workdir_lib.Workdir(workdir, config) as run:
        parallel = fpc.DataParallel.create()
        splits, num_train = input_pipeline.load_splits(config, parallel.num_devices)
        init_rng, data_rng = jax.random.split(jax.random.key(config.seed))
        steps_per_epoch = num_train // config.batch_size
        # Each process puts its share of the training set on its devices.
        one_hot = np.eye(input_pipeline.NUM_CLASSES, dtype=np.float32)[splits.train_labels]
        train_set = (splits.train_images[:num_train], one_hot[:num_train])
        train_images, train_targets = parallel.shard(input_pipeline.process_share(train_set))
        test_set = parallel.replicate((splits.test_images, splits.test_labels))

        loop = train.resolve_loop(config)
        with workdir_lib.config_errors():  # fpc.nnx.train_step checks its arguments here
            model, optimizer = create_model_and_optimizer(config, init_rng, steps_per_epoch)
            graphdef, state = nnx.split({"model": model, "optimizer": optimizer})
            train_epoch = make_train_epoch(config, graphdef, loop, parallel.batch_sharding)
            jax.eval_shape(train_epoch, state, train_images, train_targets, data_rng)
        state = parallel.replicate(state)
        params = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
        logging.info(
            f"{config.dataset}: {num_train} training and {len(splits.test_images)} test images. "
            f"NNX model {config.model!r} ({sum(p.size for p in params):,} params), algorithm "
            f"{config.algorithm!r}, {config.inference_steps} inference steps, loop {loop!r}, on "
            f"{workdir_lib.describe_devices(parallel.num_devices)}."
        )
        evaluate_state = functools.partial(
            evaluate, test_set=test_set, graphdef=graphdef, batch_size=config.eval_batch_size,
            output_energy=train.OUTPUT_ENERGIES[config.output_energy],
        )  # fmt: skip
        state = run.resume(state, weights=("model",), evaluate=evaluate_state)  # a fresh optimizer

        def run_epoch(state, epoch):
            rng = jax.random.fold_in(data_rng, epoch)
            state, metrics = train_epoch(state, train_images, train_targets, rng)
            return state, {**train.summarize_epoch(metrics), **evaluate_state(state)}

        rates = ["node_learning_rate"] * (config.algorithm != "bp") + ["learning_rate"]
        examples = steps_per_epoch * config.batch_size
        state = run.train(
            state, run_epoch, log_line=train.log_line, learning_rates=rates,
            examples_per_epoch=examples,
        )  # fmt: skip

        if run.history:  # process 0, after training or in a finished workdir
            accuracy = run.history[-1]["test_accuracy"]
            title = f"NNX MLP on {config.dataset}, algorithm {config.algorithm!r}"
            workdir_lib.plot_curves(run.history, run.path / "curves.png", train.CURVES, title)
        else:
            accuracy = workdir_lib.to_host(evaluate_state(state))["test_accuracy"]
        epochs = max(config.num_epochs, run.start_epoch)
        logging.info("Final test accuracy: %.2f%% after %d epochs.", 100 * accuracy, epochs)
    return state
