"""A loss over the global batch, computed shard by shard with collectives (`jax.shard_map`)."""
from collections.abc import Callable

import jax
from jax.sharding import PartitionSpec as P

from jaxmm.parallel.mesh import BATCH_AXES


def over_batch_axes(loss: Callable, mesh: jax.sharding.Mesh, num_batched: int,
                    num_replicated: int = 0) -> Callable:
  """`loss(*batched, *replicated, axis_name=BATCH_AXES)` under `jax.shard_map`.

  The first `num_batched` arguments are [B, ...] arrays split over the mesh's
  batch axes (each shard sees its [B / shards, ...] block), the next
  `num_replicated` are the same on every shard (a logit scale, a bias); the
  loss reduces over `axis_name` itself and returns the same scalar on every
  shard. The contrastive losses (`jaxmm.losses`) have this form.
  """
  batch = P(BATCH_AXES)
  return jax.shard_map(lambda *args: loss(*args, axis_name=BATCH_AXES),
                       mesh=mesh,
                       in_specs=(batch,) * num_batched + (P(),) * num_replicated,
                       out_specs=P())
