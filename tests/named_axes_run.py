"""Trains a BatchNorm PC net with ``axis_name`` under jax.pmap and jax.shard_map (JSON out).

Run by tests/test_named_axes.py in a fresh process with two simulated CPU
devices (the device count is fixed when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/named_axes_run.py

For each algorithm it prints the weights, BatchNorm statistics and metrics of
``STEPS`` steps run four ways on the same batches: ``jit`` (one device, the
whole batch, BatchNorm without an axis name), ``pmap1`` (pmap over one device,
the whole batch), ``pmap2`` and ``shard_map2`` (two devices, half the batch each).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import flax_pc as fpc

AXIS, BATCH, STEPS = "batch", 16, 3


class Net(nn.Module):
    """Dense -> BatchNorm (over ``axis_name``'s devices too) -> tanh -> node, twice, a head."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(16, use_bias=False)(x)  # BatchNorm removes a bias
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(h)
        h = fpc.PCNode()(nn.tanh(h))
        h = fpc.PCNode()(nn.tanh(nn.Dense(16)(h)))
        return nn.Dense(3)(h)


def _data():
    x = jax.random.normal(jax.random.key(0), (STEPS * BATCH, 5))
    y = jax.nn.one_hot(jnp.arange(STEPS * BATCH) % 3, 3)
    return np.asarray(x), np.asarray(y)


def _state(algorithm, axis_name):
    # SGD, not Adam: Adam's step does not see a gradient counted twice.
    model = Net(axis_name=axis_name)
    variables = Net().init(jax.random.key(1), _data()[0][:BATCH])
    return fpc.PCTrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=optax.sgd(0.1),
        inference=fpc.Inference(optax.sgd(0.1), 3), algorithm=algorithm,
        model_state={"batch_stats": variables["batch_stats"]}, axis_name=axis_name,
    )  # fmt: skip


def _batches():
    x, y = _data()
    return [(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]) for i in range(STEPS)]


def _record(state, metrics):
    leaves = lambda tree: [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(tree)]  # noqa: E731
    return {
        "params": leaves(state.params),
        "batch_stats": leaves(state.model_state),
        "energy": np.asarray(metrics["energy"]).tolist(),
        "loss": float(metrics["loss"]),
        "energy_rose": bool(metrics["energy_rose"]),
        "node_energies": {k: float(v) for k, v in metrics["node_energies"].items()},
    }


def run_jit(algorithm):
    state = _state(algorithm, None)
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    for x, y in _batches():
        state, metrics = step(state, x, y)
    return _record(state, metrics)


def run_pmap(algorithm, devices):
    n = len(devices)
    state = _state(algorithm, AXIS)
    state = jax.tree_util.tree_map(lambda a: np.stack([a] * n), state)
    step = jax.pmap(lambda s, x, y: s.train_step(x, y), axis_name=AXIS, devices=devices)
    for x, y in _batches():
        state, metrics = step(state, x.reshape(n, -1, *x.shape[1:]), y.reshape(n, -1, 3))
    replicas = [jax.tree_util.tree_map(lambda a, i=i: a[i], state.params) for i in range(n)]
    for replica in replicas[1:]:  # the weight step was the same on every device
        for a, b in zip(jax.tree_util.tree_leaves(replica), jax.tree_util.tree_leaves(replicas[0])):
            np.testing.assert_array_equal(a, b)
    first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)  # noqa: E731
    return _record(first(state), first(metrics))


def run_shard_map(algorithm, devices):
    mesh = jax.make_mesh((len(devices),), (AXIS,), devices=devices)
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    state = jax.device_put(_state(algorithm, AXIS), replicated)
    step = jax.jit(
        jax.shard_map(
            lambda s, x, y: s.train_step(x, y),
            mesh=mesh,
            in_specs=(P(), P(AXIS), P(AXIS)),
            out_specs=(P(), P()),
        )  # fmt: skip
    )
    for x, y in _batches():
        state, metrics = step(state, jax.device_put(x, split), jax.device_put(y, split))
    return _record(state, metrics)


def main():
    devices = jax.devices()
    results = {}
    for algorithm in ("pc", "ipc", "bp"):
        results[algorithm] = {
            "jit": run_jit(algorithm),
            "pmap1": run_pmap(algorithm, devices[:1]),
            "pmap2": run_pmap(algorithm, devices[:2]),
            "shard_map2": run_shard_map(algorithm, devices[:2]),
        }
    print("RESULT " + json.dumps({"devices": len(devices), "results": results}), flush=True)


if __name__ == "__main__":
    main()
