"""Mesh, logical-axis rules, batch placement, losses over the batch axes, multi-process start."""
from jaxmm.parallel.batch import (batch_sharding, gather_rows, global_batch, replicated,
                                  shard_whole_batch, to_host)
from jaxmm.parallel.batch_loss import over_batch_axes
from jaxmm.parallel.mesh import (BATCH_AXES, MESH_AXES, batch_shards, check_batch_size, describe,
                                 make_mesh, mesh_shape)
from jaxmm.parallel.rules import DEFAULT_RULES, shardings_of
