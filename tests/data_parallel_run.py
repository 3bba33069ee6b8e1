"""Trains a small PC network data-parallel and prints its final weights (JSON).

Run by tests/test_parallel.py in fresh processes (the device count is fixed
when JAX starts):

    python tests/data_parallel_run.py DEVICES [COORDINATOR PROCESSES PROCESS_ID]

``DEVICES``: how many of the local devices to use (0: all). With a
coordinator, the process joins a ``jax.distributed`` run and trains on its
share of every batch.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import flax_pc as fpc

BATCH, STEPS = 32, 3


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        # No bias before BatchNorm: its gradient is zero up to rounding, which Adam
        # would blow up into updates that differ with the reduction order.
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(16, use_bias=False)(x))
        x = fpc.PCNode()(nn.tanh(x))
        x = fpc.PCNode()(nn.tanh(nn.Dense(16)(x)))
        return nn.Dense(3)(x)


def main(argv):
    devices = int(argv[1])
    if len(argv) > 2:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=argv[2], num_processes=int(argv[3]), process_id=int(argv[4]),
            initialization_timeout=60,
        )  # fmt: skip
    parallel = fpc.DataParallel.create(jax.devices()[:devices] if devices else None)
    x = jax.random.normal(jax.random.key(0), (STEPS * BATCH, 5))
    y = jax.nn.one_hot(jnp.arange(STEPS * BATCH) % 3, 3)
    model = Net()
    variables = model.init(jax.random.key(1), x[:BATCH])
    state = fpc.PCTrainState.create(
        apply_fn=lambda v, x, **kw: model.apply(v, x, train=True, **kw),
        params=variables["params"], model_state={"batch_stats": variables["batch_stats"]},
        tx=optax.adam(1e-2), inference=fpc.Inference(optax.sgd(0.1), 3),
    )  # fmt: skip
    state = parallel.replicate(state)
    step = jax.jit(lambda s, x, y: s.train_step(x, y))
    share = BATCH // jax.process_count()
    start = jax.process_index() * share
    for i in range(STEPS):
        batch = (x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
        local = jax.tree_util.tree_map(lambda a: np.asarray(a)[start : start + share], batch)
        state, metrics = step(state, *parallel.shard(local))
    epoch = jax.jit(fpc.train_epoch, static_argnames=("batch_size", "batch_sharding"))
    local_data = jax.tree_util.tree_map(
        lambda a: np.asarray(a).reshape(jax.process_count(), -1, *a.shape[1:])[jax.process_index()],
        (x, y),
    )
    state, _ = epoch(
        state, *parallel.shard(local_data), jax.random.key(2), batch_size=BATCH,
        batch_sharding=parallel.batch_sharding,
    )  # fmt: skip
    local_copy = jax.tree_util.tree_map(lambda a: np.asarray(a.addressable_data(0)), state)
    result = {
        "devices": parallel.num_devices,
        "processes": jax.process_count(),
        "params": [leaf.tolist() for leaf in jax.tree_util.tree_leaves(local_copy.params)],
        "batch_stats": [
            leaf.tolist() for leaf in jax.tree_util.tree_leaves(local_copy.model_state)
        ],
        "energy": np.asarray(metrics["energy"].addressable_data(0)).tolist(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
