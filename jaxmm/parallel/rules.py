"""Logical axis rules: how the models' named axes land on the mesh.

Models name every parameter axis and their main activation axes (flax
`with_logical_partitioning` / `with_logical_constraint`); this one table
decides the sharding policy. `embed` on `fsdp` is ZeRO-3 style parameter and
optimizer-state sharding; `mlp`, `heads` and `vocab` on `tensor` is
Megatron-style tensor parallelism. Activations have names of their own
(`act_*`) so that sharding parameters over `fsdp` never asks an activation,
already split over `fsdp` by its batch axis, to be split over it twice.
"""
from typing import Any

import flax.linen as nn
import jax

from jaxmm.parallel.mesh import BATCH_AXES

LogicalRules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: LogicalRules = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("joint", None),
    # activations
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)


def shardings_of(boxed_tree: Any,
                 mesh: jax.sharding.Mesh,
                 rules: LogicalRules = DEFAULT_RULES) -> Any:
  """NamedShardings for a (possibly abstract) pytree whose leaves may carry logical names.

  Leaves without names (step counters, optimizer counts) are replicated. Empty
  nodes stay empty, boxed or not: a partitioned optimizer (Muon's) keeps no
  state for some parameters, an optax MaskedNode, which flax would otherwise
  read as a spec (it is a tuple) or name as its box says.
  """
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  unbox_empty = lambda x: x.unbox() if is_box(x) and not jax.tree.leaves(x.unbox()) else x
  specs = nn.get_partition_spec(jax.tree.map(unbox_empty, boxed_tree, is_leaf=is_box))
  return jax.tree.map(lambda spec: nn.logical_to_mesh_sharding(spec, mesh, rules),
                      specs,
                      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
