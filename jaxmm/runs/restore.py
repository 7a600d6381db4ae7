"""A checkpoint's train state read back: as host numpy arrays, or straight into its shards on a
mesh, placed as the train loop places them (`jaxmm.analysis.load_run` returns it as a `Run`).

On a mesh, the shardings come from the run's saved config alone: its model
(`jaxmm.train.model_init`), optimizer and EMA make the abstract train state that
`jaxmm.train.state_shardings` shards by the parameters' logical axis names.
"""
import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmm import models
from jaxmm.runs import run_files
from jaxmm.runs import checkpoints
from jaxmm.runs import posthoc
from jaxmm.train import model_init
from jaxmm.train import optim
from jaxmm.train import state as state_lib


def sharded_target(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """The train state as ShapeDtypeStructs carrying the shardings the loop gives it on `mesh`."""
  init_variables = model_init.make_init_variables(models.get_model(config.model), config)
  tx, _ = optim.make_optimizer(config.optim, config.total_steps)
  shardings = state_lib.state_shardings(init_variables, tx, config.ema, mesh)
  return state_lib.abstract_state(init_variables, tx, config.ema, shardings)


def _restore(manager, step: int, *, mesh: jax.sharding.Mesh | None):
  """(config, state, input position) of checkpoint `step`: the state as host numpy arrays, or
  on `mesh` in the loop's shardings."""
  config = run_files.saved_config(manager, step)
  if mesh is None:
    target = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype),
                          checkpoints.state_metadata(manager, step))
  else:
    target = sharded_target(config, mesh)
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
  if mesh is not None:  # a TrainState; the host restore gives the same fields as a dict
    state = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
  written = posthoc.read_written(workdir, int(state["step"]), state["params"])
  if written:
    state["ema"] = {**state.get("ema", {}), **written}
  return config, state, position
