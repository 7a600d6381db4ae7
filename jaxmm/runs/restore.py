"""A checkpoint's train state read back: as host numpy arrays, or straight into its shards on a
mesh, placed as the train loop placed them (`jaxmm.analysis.load_run` returns it as a `Run`).

On a mesh, each array goes where the checkpoint says it was: orbax saves every
array's partition spec (mesh axes such as ('tensor', 'fsdp'), which the loop
derives from the parameter's logical axis names and do not depend on the mesh's
size), so the same spec on any mesh of jaxmm's axes places it as training on
that mesh would, with no model, optimizer or EMA built to find out.
"""
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmm.runs import run_files
from jaxmm.runs import checkpoints
from jaxmm.runs import posthoc


def _saved_spec(meta) -> jax.sharding.PartitionSpec:
  """The partition spec an array was saved with (replicated if the checkpoint has none)."""
  saved = getattr(meta, "sharding", None)
  spec = getattr(saved, "partition_spec", None) or ()
  # Read back from JSON, an axis tuple such as ('data', 'fsdp') is a list.
  return jax.sharding.PartitionSpec(*(tuple(e) if isinstance(e, list) else e for e in spec))


def sharded_target(metadata: Any, mesh: jax.sharding.Mesh) -> Any:
  """The saved state's array metadata as ShapeDtypeStructs, each sharded on `mesh` by the
  partition spec it was saved with."""
  return jax.tree.map(
      lambda meta: jax.ShapeDtypeStruct(
          meta.shape, meta.dtype, sharding=jax.sharding.NamedSharding(mesh, _saved_spec(meta))),
      metadata)


def _restore(manager, step: int, *, mesh: jax.sharding.Mesh | None):
  """(config, state, input position) of checkpoint `step`: the state as host numpy arrays, or
  on `mesh` in the loop's shardings."""
  config = run_files.saved_config(manager, step)
  metadata = checkpoints.state_metadata(manager, step)
  if mesh is None:
    target = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype), metadata)
  else:
    target = sharded_target(metadata, mesh)
  state, position = checkpoints.restore(manager, step, target)
  return config, state, position


def restore_run(
    workdir: str, step: int | None,
    mesh: jax.sharding.Mesh | None) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict]:
  """(config, state, input position) of checkpoint `step` of `workdir` (None: the latest).

  The state is a dict of the train state's fields ('step', 'params',
  'opt_state', and 'ema', 'model_state' where the run has them); 'ema' also
  holds the averages `jaxmm ema` wrote at that step (`posthoc.read_written`).
  A checkpoint rotated out or damaged while it is read is handled as
  `run_files.read_checkpoint` says.
  """
  with run_files.read_only_manager(workdir) as manager:
    _, (config, state, position) = run_files.read_checkpoint(
        manager, workdir, step, functools.partial(_restore, mesh=mesh))
  written = posthoc.read_written(workdir, int(state["step"]), state["params"])
  if written:
    state["ema"] = {**state.get("ema", {}), **written}
  return config, state, position
