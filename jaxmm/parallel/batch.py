"""Host-local batches to global arrays sharded over the mesh's batch axes."""
from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from jaxmm.parallel.mesh import BATCH_AXES


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over (`data`, `fsdp`), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray],
                 mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows [b, ...] into global arrays [b * processes, ...]."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def shard_whole_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Arrays [B, ...] that every process holds whole -> global arrays split over the batch axes.

  Each process contributes its own shards' rows; unlike `global_batch`, the
  input is the whole batch, not this process's part of it.
  """
  return jax.device_put(jax.tree.map(np.asarray, batch), batch_sharding(mesh))


def gather_rows(local_batch: Any) -> Any:
  """Each process's rows [b, ...] (host arrays) -> the whole [b * processes, ...] on every
  process, in process order: the inverse of reading one's rows of a global batch."""
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
                      local_batch)


def to_host(tree: Any) -> Any:
  """Numpy copies of (possibly sharded, multi-host) arrays, whole on every process."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(fetch, tree)
