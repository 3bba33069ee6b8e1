"""Data parallelism: one batch split over every device, on one host or many.

Predictive coding is data parallel like backprop: the nodes are per example,
so they split with the batch, and the weight gradient is a sum over the batch,
which XLA reduces across devices. :class:`DataParallel` holds a one-axis mesh
over the devices and puts arrays on it: the train state replicated on every
device, batches (and a device-resident data set) split along their first
axis. The train step stays the plain ``jax.jit(state.train_step)``: jit
follows the shardings of its inputs, and the nodes, made inside the step from
the sharded batch, are sharded like it.

Several hosts: call ``jax.distributed.initialize(...)`` first in every
process; each process then passes *its own share* of every batch to
:meth:`~flax_pc.DataParallel.shard`, and the same state to
:meth:`~flax_pc.DataParallel.replicate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from flax_pc._src.types import PyTree

__all__ = ["DataParallel"]


class DataParallel(struct.PyTreeNode):
    """A one-axis device mesh for data-parallel training.

    Attributes:
      mesh: the devices, along one axis named ``axis``.
      axis: the mesh axis the batch is split over.
    """

    mesh: Mesh = struct.field(pytree_node=False)
    axis: str = struct.field(pytree_node=False, default="batch")

    @classmethod
    def create(cls, devices: Sequence[Any] | None = None, axis: str = "batch") -> DataParallel:
        """A mesh over ``devices``, a list of ``jax.Device`` (default: all of every process)."""
        devices = list(jax.devices() if devices is None else devices)
        if not devices:
            raise ValueError("DataParallel needs at least one device.")
        # Auto axes: XLA propagates the shardings through the step (GSPMD),
        # including the data set gather of fpc.train_epoch.
        mesh = jax.make_mesh((len(devices),), (axis,), (AxisType.Auto,), devices=devices)
        return cls(mesh=mesh, axis=axis)

    @property
    def num_devices(self) -> int:
        """Devices in the mesh (a global batch must divide by it)."""
        return self.mesh.size

    @property
    def replicated(self) -> NamedSharding:
        """The sharding of the state, a full copy on every device."""
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        """The sharding of batches, split along the first axis."""
        return NamedSharding(self.mesh, PartitionSpec(self.axis))

    def replicate(self, tree: PyTree) -> PyTree:
        """Puts ``tree`` (e.g. a train state) on every device.

        With several processes, each must pass the same values.
        """
        return jax.tree_util.tree_map(
            lambda leaf: _global_array(self.replicated, leaf, np.shape(leaf)), tree
        )

    def shard(self, tree: PyTree) -> PyTree:
        """Splits every array of ``tree`` along its first axis over the devices.

        Args:
          tree: arrays with a leading batch axis; with several processes, this
            process's share (its global batch is the concatenation of the
            processes' shares, in process order).

        Raises:
          ValueError: if a (global) leading axis does not divide by the
            number of devices.
        """
        processes = jax.process_count()

        def put(leaf: Any) -> jax.Array:
            shape = np.shape(leaf)
            global_shape = (shape[0] * processes, *shape[1:]) if shape else shape
            if not shape or global_shape[0] % self.num_devices:
                raise ValueError(
                    f"a batch of {global_shape[0] if shape else 'no'} examples cannot be split "
                    f"over {self.num_devices} devices: the batch size must be a multiple of "
                    f"the device count."
                )
            return _global_array(self.batch_sharding, leaf, global_shape)

        return jax.tree_util.tree_map(put, tree)


def _global_array(sharding: NamedSharding, leaf: Any, global_shape: tuple[int, ...]) -> jax.Array:
    if isinstance(leaf, jax.Array) and leaf.is_fully_addressable and jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        # A typed key (an NNX model's RNG stream) has no NumPy form: place its data.
        data = jax.random.key_data(leaf)
        placed = _global_array(sharding, data, global_shape + data.shape[leaf.ndim :])
        return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(leaf))
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), global_shape)
