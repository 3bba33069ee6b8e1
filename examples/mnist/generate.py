"""Images for a label from a trained bPC model (``model='bpc'``): clamp the label, infer the image.

:class:`models_bpc.BPC` with ``generate=True`` takes the one-hot labels as its input:
its image and hidden layers are value nodes, which start at a top-down pass of
the backward weights; its output, the forward prediction of the label, is
clamped to the label by the output energy. :data:`STEPS` steps of SGD on the
nodes (``config.node_learning_rate``, as in training) then find the image that
the whole network, forward and backward weights, finds most likely for the
label: one image per class, its prototype (inference finds the energy's
minimum, not samples of it). At the end of a bPC run, ``train.py`` calls
:func:`save_samples`, which draws ``samples.png`` into the workdir.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

import flax_pc as fpc
from examples.common import image_grid, input_pipeline
from examples.common import workdir as workdir_lib

#: Node steps that infer an image for a clamped label.
STEPS = 200
#: The file :func:`save_samples` writes into the workdir.
SAMPLES_FILE = "samples.png"


@functools.partial(jax.jit, static_argnames=("model", "output_energy", "steps", "learning_rate"))
def generate(
    model: Any,
    params: Any,
    labels: jax.Array,
    *,
    output_energy: Any,
    steps: int,
    learning_rate: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Infers an image for each of ``labels`` (one-hot, ``[B, num_classes]``).

    Args:
      model: a :class:`models_bpc.BPC` (its ``generate`` and ``node`` are set here).
      params: its trained params.
      labels: the clamped labels.
      output_energy: the run's output energy (it clamps the label).
      steps: node steps of SGD.
      learning_rate: their learning rate.

    Returns:
      ``(top_down, inferred, energy)``: the images of the top-down pass and after
      inference, ``[B, image_size]``, and the total energy before each step and
      after the last, ``[steps + 1]``.
    """
    # Every node starts at its backward prediction, whatever the run's value_init.
    generator = functools.partial(model.clone(generate=True, node=fpc.PCNode).apply, train=False)
    start = fpc.init_nodes(generator, params, labels)
    nodes, energies = fpc.infer(
        generator, params, start, labels, labels,
        inference=fpc.Inference(optax.sgd(learning_rate), steps, unroll=False),
        output_energy=output_energy,
    )  # fmt: skip
    final = fpc.energy(generator, params, nodes, labels, labels, output_energy=output_energy)
    energy = jnp.append(energies.total, final.total)
    return start["image"]["value"], nodes["image"]["value"], energy


def save_samples(
    config: ml_collections.ConfigDict, model: Any, state: Any, path: pathlib.Path
) -> None:
    """Writes ``path / SAMPLES_FILE``: for each class, its top-down image and its inferred one.

    Args:
      config: the run's config.
      model: the run's :class:`models_bpc.BPC`.
      state: its trained :class:`flax_pc.PCTrainState` (the params, the output energy).
      path: the workdir.
    """
    if config.algorithm == "bp":
        logging.warning(
            f"No {SAMPLES_FILE}: algorithm 'bp' trains the forward weights alone (the "
            "classifier); bPC's generation needs the backward weights that inference trains."
        )
        return
    labels = jnp.eye(input_pipeline.NUM_CLASSES, dtype=jnp.float32)
    top_down, inferred, energy = generate(
        model, workdir_lib.to_host(state.params), labels, output_energy=state.output_energy,
        steps=STEPS, learning_rate=config.node_learning_rate,
    )  # fmt: skip
    energy = np.asarray(energy) / len(labels)
    rows = [
        ("top-down pass\n(backward weights)", np.asarray(top_down), None),
        (f"inferred\n({STEPS} node steps)", np.asarray(inferred), None),
    ]
    title = (
        f"bPC on {config.dataset}: an image for each label 0-9, clamped; energy per image "
        f"{energy[0]:.3g} -> {energy[-1]:.3g}"
    )
    image_grid.plot_samples(rows, path / SAMPLES_FILE, input_pipeline.IMAGE_SHAPE[:2], title)
    logging.info(
        f"Wrote {path / SAMPLES_FILE}: an image for each label, inferred in {STEPS} node steps "
        f"(energy per image {energy[0]:.4g} -> {energy[-1]:.4g})."
    )
