"""Langevin inference: node steps with noise, so that inference samples instead of descending.

:func:`~flax_pc.langevin` is an optax transform for ``node_tx``. Its noise comes from
the ``rng`` given to :func:`flax_pc.infer`, ``train_step``,
:func:`flax_pc.train_epoch` or :func:`flax_pc.infer_to_equilibrium`:
flax_pc's inference loops pass every node update a ``key=`` extra argument
(optax's ``GradientTransformationExtraArgs`` convention, which ``optax.chain``
forwards and other transforms ignore). Step ``t``'s key is the
:data:`~flax_pc.NOISE` key folded with a constant and then with ``t``: a
new key at every step, independent of the keys that the nodes'
``value_init='normal'`` draws use. The same ``rng`` gives the same steps in
``infer`` and ``infer_to_equilibrium``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flax_pc._src.nodes import NOISE
from flax_pc._src.types import Array, PyTree

__all__ = ["langevin"]

#: Folded into the :data:`~flax_pc.NOISE` key to make the noise's keys:
#: linen folds module paths into that key for ``value_init='normal'``, so this
#: constant (the first four bytes of "lang") gives keys independent of those.
_NOISE_SALT = 0x6C616E67


def noise_key(rngs: Mapping[str, Array] | None) -> Array | None:
    """The key from which every node step's noise key is made, or ``None``.

    Args:
      rngs: linen's ``rngs`` (``as_rngs`` of the ``rng`` the user gave), or ``None``.

    Returns:
      A key derived from ``rngs[NOISE]``; ``None`` where there is no such key.
    """
    if rngs is None or NOISE not in rngs:
        return None
    return jax.random.fold_in(rngs[NOISE], _NOISE_SALT)


def step_key(key: Array | None, step: Array | int) -> Array | None:
    """The key of inference step ``step`` (0, 1, ...): a new key at every step."""
    return None if key is None else jax.random.fold_in(key, step)


def update_nodes(
    node_tx: optax.GradientTransformation,
    grads: PyTree,
    opt_state: PyTree,
    nodes: PyTree,
    key: Array | None,
) -> tuple[PyTree, PyTree]:
    """``node_tx.update(grads, opt_state, nodes)``, with ``key=key`` where there is a key.

    Every inference loop of flax_pc updates the nodes through this function,
    so a transform that takes a ``key`` extra argument (:func:`langevin`)
    gets one at every step; a transform without extra arguments (``optax.sgd``)
    is called as it always was.

    Returns:
      ``(updates, opt_state)``.
    """
    tx = optax.with_extra_args_support(node_tx)
    if key is None:
        return tx.update(grads, opt_state, nodes)
    return tx.update(grads, opt_state, nodes, key=key)


def _check_number(value: Any, name: str, *, positive: bool) -> None:
    """Raises for a Python number out of range; arrays (e.g. under
    ``optax.inject_hyperparams``) pass unchecked."""
    if isinstance(value, bool) or not isinstance(value, (int, float, jax.Array)):
        raise TypeError(f"fpc.langevin: {name} must be a number, got {value!r}.")
    if isinstance(value, jax.Array):
        return
    if positive and not value > 0:
        raise ValueError(f"fpc.langevin: {name} must be > 0, got {value!r}.")
    if not positive and not value >= 0:
        raise ValueError(
            f"fpc.langevin: {name} must be >= 0 (0 is gradient descent, 1 samples the "
            f"posterior), got {value!r}."
        )


def langevin(
    learning_rate: float | Array, temperature: float | Array = 1.0
) -> optax.GradientTransformationExtraArgs:
    """Langevin dynamics on the nodes: inference that samples ``p(nodes | data)``.

    Each step moves every node by

    ``v <- v - learning_rate * dF/dv + sqrt(2 * learning_rate * temperature) * xi``,

    ``xi ~ N(0, I)`` drawn anew for every entry of every node, every example
    and every step. With ``F`` the network's energy (the negative log-density
    of a Gaussian network, summed over the batch), the nodes of each example
    then sample from ``p(v | x, y) ∝ exp(-F / temperature)`` (up to the step
    size's discretisation error, which is of order ``learning_rate`` times
    the largest curvature of ``F``). Give it as ``node_tx`` to
    :class:`~flax_pc.PCTrainState`, :func:`~flax_pc.infer` or
    :func:`~flax_pc.infer_to_equilibrium`: with ``PCTrainState`` it is Monte
    Carlo predictive coding (MCPC, Oliviers et al., 2024), whose weight step
    follows ``dF/dparams`` at the last sample (an unbiased one-sample estimate
    of the posterior expectation that maximum likelihood follows).

    The noise comes from the ``rng`` given to ``infer``, ``train_step`` or
    ``train_epoch``: from its :data:`~flax_pc.NOISE` stream (a bare key
    feeds it). The same key gives the same samples; another key, others. An
    ``rng`` is required, except with ``temperature=0``, which is exactly
    ``optax.sgd(learning_rate)``. The transform takes the step's key as an
    extra argument, ``update(grads, state, nodes, key=key)``, so it works in
    ``optax.chain`` and under ``optax.inject_hyperparams`` (e.g. a temperature
    schedule). The output energy's precision sets the observation's weight:
    ``output_energy=energies.squared_error`` is unit variance. Run it for a
    fixed number of steps: the noise keeps ``dF/dv`` from vanishing, so
    inference to a ``tolerance`` would run to its ``max_steps``.

    Args:
      learning_rate: the step size, > 0.
      temperature: >= 0; 1 samples the posterior, 0 is gradient descent.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax_pc as fpc
      >>> tx = fpc.langevin(0.1)
      >>> nodes = {"PCNode_0": {"value": jnp.zeros((2, 3))}}
      >>> grads = jax.tree_util.tree_map(jnp.ones_like, nodes)
      >>> updates, _ = tx.update(grads, tx.init(nodes), nodes, key=jax.random.key(0))
      >>> updates["PCNode_0"]["value"].shape  # -0.1 * grad + sqrt(0.2) * noise
      (2, 3)
    """
    _check_number(learning_rate, "learning_rate", positive=True)
    _check_number(temperature, "temperature", positive=False)
    noiseless = not isinstance(temperature, jax.Array) and temperature == 0
    if noiseless:
        return optax.with_extra_args_support(optax.sgd(learning_rate))
    step_size = -learning_rate  # as optax.sgd: updates = grads * -learning_rate

    def init(params: PyTree) -> optax.OptState:
        del params
        return optax.EmptyState()

    def update(
        updates: PyTree,
        state: optax.OptState,
        params: PyTree = None,
        *,
        key: Array | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, optax.OptState]:
        del params, extra_args
        if key is None:
            raise ValueError(
                f"fpc.langevin draws its noise from the RNG stream {NOISE!r}, but no key "
                f"was given: pass rng=key (or rng={{{NOISE!r}: key, ...}}) to fpc.infer, "
                "train_step or train_epoch (or key= to update). With temperature=0 it needs "
                "none."
            )
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        keys = jax.random.split(key, len(leaves)) if leaves else []
        scale = jnp.sqrt(2.0 * learning_rate * temperature)
        steps = [
            g * step_size + scale * jax.random.normal(k, g.shape, g.dtype)
            for g, k in zip(leaves, keys)
        ]
        return jax.tree_util.tree_unflatten(treedef, steps), state

    return optax.GradientTransformationExtraArgs(init, update)
